"""Checks Graft's PyTorch and ONNX exports in PyTorch itself (run by hand; never a dependency).

Usage, from a folder holding `graft export` outputs of a MobileNetV2 (my.safetensors, labels.json,
my.onnx) and of an EfficientNet-Lite0 (lite/lite.safetensors, lite/labels.json, lite.onnx):

    python3 -m venv venv && venv/bin/pip install torch torchvision timm safetensors onnxruntime pillow
    venv/bin/python check_pytorch_export.py PHOTO...

It loads each safetensors file into torchvision's mobilenet_v2 / timm's tf_efficientnet_lite0 with
strict=True and prints the largest probability difference from the ONNX export (onnxruntime) on the
photos, asserting the same top-1.
"""
import json, sys
import numpy as np
import onnxruntime as ort
import torch, torchvision, timm
from PIL import Image
from safetensors.torch import load_file

def model_for(weights, labels_json):
    info = json.load(open(labels_json))
    if info["pytorch"]["constructor"] == "mobilenet_v2":
        model = torchvision.models.mobilenet_v2(num_classes=len(info["labels"]))
    else:
        model = timm.create_model("tf_efficientnet_lite0", num_classes=len(info["labels"]))
    model.load_state_dict(load_file(weights), strict=True)
    return model.eval(), info

def inputs(pre, path):
    image = Image.open(path).convert("RGB")
    scale = pre["resize_short_side"] / min(image.size)
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.BILINEAR)
    left, top = (image.width - pre["center_crop"]) // 2, (image.height - pre["center_crop"]) // 2
    image = image.crop((left, top, left + pre["center_crop"], top + pre["center_crop"]))
    x = (np.asarray(image, np.float32) / 255 - pre["mean"]) / pre["std"]
    return x.transpose(2, 0, 1)[None].astype(np.float32)

for weights, labels_json, onnx in [("my.safetensors", "labels.json", "my.onnx"), ("lite/lite.safetensors", "lite/labels.json", "lite.onnx")]:
    model, info = model_for(weights, labels_json)
    session = ort.InferenceSession(onnx)
    worst = 0.0
    for photo in sys.argv[1:]:
        x = inputs(info["preprocessing"], photo)
        with torch.no_grad():
            p_torch = torch.softmax(model(torch.from_numpy(x)), 1)[0].numpy()
        p_onnx = session.run(["probabilities"], {"input": x})[0][0]
        worst = max(worst, float(np.abs(p_torch - p_onnx).max()))
        assert p_torch.argmax() == p_onnx.argmax()
    print(info["pytorch"]["constructor"], "strict load ok;", len(sys.argv) - 1, "photos; max |torch - onnx| probability", f"{worst:.2e}")
