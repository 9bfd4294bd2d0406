#!/usr/bin/env python3
"""The native CLI against PyTorch on the same machine: the same jobs, wall time side by side.

Run by hand where torch and torchvision are installed (never a dependency of the project):

    python3 -m venv venv && venv/bin/pip install torch torchvision pillow
    venv/bin/python tests/bench/pytorch_peer.py GRAFT_BINARY DATA_DIR --weights mobilenet-v2.pth

GRAFT_BINARY is `graft` built with `cargo build --release -p graft-engine --features cli`; DATA_DIR is
a folder of class folders (the Tux Paint photos of `cargo xtask datasets`, say); the .pth is the
torchvision MobileNetV2 checkpoint that `cargo xtask weights` converts (its cache keeps it). Both sides
do what a person asks of them, at 224 px in batches of 16 with AdamW and label smoothing 0.1, on the
same 80/20 stratified split by file name:

- head-only, 30 epochs: every picture decoded, resized (short side 224, centre crop), embedded once
  by the frozen body; then the new linear head trains on the embeddings (what Graft does);
- full fine-tuning, 2 epochs: every picture through the whole network, forward and backward,
  BatchNorm in training mode; a validation pass after each epoch.

PyTorch uses as many threads as Graft can (torch.set_num_threads(os.cpu_count())). Each job's wall
time includes reading the pictures and loading the weights, as `graft train` does; the figures are
printed as one line per job: `peer: JOB graft S s, pytorch S s, graft at X of PyTorch's speed`.
"""
import argparse
import json
import os
import subprocess
import time

import numpy as np
import torch
import torchvision
from PIL import Image

EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp"}
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


def read_folder(root, size=224):
    """(inputs [n, 3, size, size], labels, class names): short side to `size`, centre crop."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    images, labels = [], []
    for index, name in enumerate(classes):
        folder = os.path.join(root, name)
        for file in sorted(os.listdir(folder)):
            if os.path.splitext(file)[1].lower() not in EXTENSIONS:
                continue
            image = Image.open(os.path.join(folder, file)).convert("RGB")
            w, h = image.size
            scale = size / min(w, h)
            image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
            w, h = image.size
            left, top = (w - size) // 2, (h - size) // 2
            array = np.asarray(image.crop((left, top, left + size, top + size)), np.float32) / 255.0
            images.append(((array - MEAN) / STD).transpose(2, 0, 1))
            labels.append(index)
    return torch.from_numpy(np.stack(images)), torch.tensor(labels), classes


def split(labels, val_fraction=0.2):
    """Stratified: the last `val_fraction` of each class (by file name) validates."""
    train, val = [], []
    for c in labels.unique().tolist():
        members = (labels == c).nonzero().flatten().tolist()
        n_val = max(1, round(len(members) * val_fraction))
        train += members[: len(members) - n_val]
        val += members[len(members) - n_val:]
    return torch.tensor(train), torch.tensor(val)


def model_with_head(weights, classes):
    model = torchvision.models.mobilenet_v2(weights=None)
    model.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    model.classifier[1] = torch.nn.Linear(model.classifier[1].in_features, classes)
    return model


def head_only(data_dir, weights, epochs, batch):
    started = time.perf_counter()
    x, y, classes = read_folder(data_dir)
    train, val = split(y)
    model = model_with_head(weights, len(classes)).eval()
    with torch.no_grad():
        features = torch.cat([
            torch.nn.functional.adaptive_avg_pool2d(model.features(x[i:i + batch]), 1).flatten(1)
            for i in range(0, len(x), batch)
        ])
    head = model.classifier[1]
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        order = train[torch.randperm(len(train), generator=generator)]
        for i in range(0, len(order), batch):
            chosen = order[i:i + batch]
            optimizer.zero_grad()
            loss_fn(head(features[chosen]), y[chosen]).backward()
            optimizer.step()
    with torch.no_grad():
        accuracy = (head(features[val]).argmax(1) == y[val]).float().mean().item()
    return time.perf_counter() - started, accuracy


def full(data_dir, weights, epochs, batch):
    started = time.perf_counter()
    x, y, classes = read_folder(data_dir)
    train, val = split(y)
    model = model_with_head(weights, len(classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    generator = torch.Generator().manual_seed(0)
    accuracy = 0.0
    for _ in range(epochs):
        model.train()
        order = train[torch.randperm(len(train), generator=generator)]
        for i in range(0, len(order), batch):
            chosen = order[i:i + batch]
            optimizer.zero_grad()
            loss_fn(model(x[chosen]), y[chosen]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            predicted = torch.cat([model(x[val[i:i + batch]]).argmax(1) for i in range(0, len(val), batch)])
        accuracy = (predicted == y[val]).float().mean().item()
    return time.perf_counter() - started, accuracy


def graft(binary, data_dir, weights_dir, strategy, epochs, batch):
    started = time.perf_counter()
    run = subprocess.run(
        [binary, "train", data_dir, "--model", "mobilenet-v2", "--strategy", strategy, "--epochs", str(epochs),
         "--batch", str(batch), "--patience", "0", "--json"]
        + (["--weights-dir", weights_dir] if weights_dir else []),
        check=True, capture_output=True, text=True,
    )
    seconds = time.perf_counter() - started
    done = [json.loads(line) for line in run.stdout.splitlines() if '"done"' in line]
    return seconds, (done[-1].get("val_accuracy") if done else None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("graft")
    parser.add_argument("data_dir")
    parser.add_argument("--weights", required=True, help="torchvision mobilenet_v2 .pth")
    parser.add_argument("--weights-dir", help="graft's converted weights (default: the clone's public/models)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--only", choices=["head-only", "full"])
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count())
    jobs = [("head-only", 30, head_only), ("full", 2, full)]
    for name, epochs, peer in jobs:
        if args.only and args.only != name:
            continue
        ours, our_accuracy = graft(args.graft, args.data_dir, args.weights_dir, name, epochs, args.batch)
        theirs, their_accuracy = peer(args.data_dir, args.weights, epochs, args.batch)
        print(
            f"peer: {name} x{epochs} graft {ours:.1f} s (val {our_accuracy}), pytorch {theirs:.1f} s "
            f"(val {their_accuracy:.3f}, {torch.get_num_threads()} threads), graft at {theirs / ours:.2f} "
            "of PyTorch's speed",
            flush=True,
        )


if __name__ == "__main__":
    main()
