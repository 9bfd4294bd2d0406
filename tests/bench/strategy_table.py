#!/usr/bin/env python3
"""Strategy x dataset -> validation accuracy and seconds, with the native CLI (`graft train --json`).

Usage: strategy_table.py GRAFT_BINARY DATASETS_DIR [--model M] [--per-class N] [--epochs N] [--out FILE]

DATASETS_DIR is what `cargo xtask datasets` builds (tests/fixtures/datasets/make_datasets.py). Every run
uses seed 0 and the same stratified 20% validation split; prints a Markdown table and, with --out, writes
every run's `done` event as JSON lines.
"""
import argparse
import json
import subprocess
import sys

STRATEGIES = [
    ("head-only", []),
    ("partial-freeze", ["--trainable-blocks", "5"]),
    ("staged", []),
    ("full", []),
    ("scratch", []),
]
DATASETS = ["tuxpaint-photos", "animal-silhouettes", "digits"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("graft")
    parser.add_argument("datasets")
    parser.add_argument("--model", default="mobilenet-v2")
    parser.add_argument("--per-class", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--out")
    parser.add_argument("--only", help="comma-separated dataset names")
    args = parser.parse_args()
    datasets = args.only.split(",") if args.only else DATASETS
    rows = []
    out = open(args.out, "a") if args.out else None
    for dataset in datasets:
        for strategy, extra in STRATEGIES:
            epochs = 30 if strategy == "head-only" else args.epochs
            command = [
                args.graft, "train", f"{args.datasets}/{dataset}", "--model", args.model,
                "--strategy", strategy, "--epochs", str(epochs), "--seed", "0",
                "--max-per-class", str(args.per_class), "--json", *extra,
            ]
            result = subprocess.run(command, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"{dataset} {strategy}: failed: {result.stderr.strip()}", file=sys.stderr)
                continue
            done = json.loads(result.stdout.strip().splitlines()[-1])
            done["dataset"] = dataset
            done["model"] = args.model
            rows.append(done)
            if out:
                out.write(json.dumps(done) + "\n")
                out.flush()
            print(f"{dataset:20} {strategy:15} val {done['val_accuracy']:.3f} "
                  f"epochs {done['epochs']:3} best {done['best_epoch']} {done['seconds']:.0f} s", file=sys.stderr)
    print(f"| dataset | strategy | val accuracy | epochs run (best) | seconds |")
    print(f"|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['dataset']} | {row['strategy']} | {100 * row['val_accuracy']:.1f}% | "
              f"{row['epochs']} ({row['best_epoch']}) | {row['seconds']:.0f} |")


if __name__ == "__main__":
    main()
