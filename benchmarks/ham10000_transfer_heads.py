"""Benchmark step 2 (HAM10000, issue 25): one-class heads on the cached pooled features.

    PYTHONPATH=$PWD python benchmarks/ham10000_transfer_heads.py OUT/feats_<backbone>_<size>_<intensity>.npz [knn,maha,ocsvm]

For each tapped layer (and a few concatenations) and pooling (avg, avg+std, max), each part
unit length as TransferFeatures makes it: k-NN cosine distance (k 1, 10: DN2), Mahalanobis
(Ledoit-Wolf
on raw and on unit-length features) and the linear nu-OCSVM of
adlight.models.ocsvm (nu 0.1, 0.5
fitted on every third training nevus). Prints validation
ALL, test ALL and test AUROC per disease. Settings are chosen on the validation column.
"""
import sys

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from sklearn.metrics import roc_auc_score

from adlight.models.ocsvm import fit_linear_ocsvms

torch.set_num_threads(1)
f = np.load(sys.argv[1])
names = list(f["class_names"])
taps = ["blocks.2", "blocks.3", "blocks.4", "blocks.5", "blocks.6", "pre_logits"]
def part(split, tap, pool):
    v = f[f"{split}|{tap}"].astype(np.float64)
    if tap == "pre_logits":
        return v
    c = v.shape[1] // 3
    sel = {"avg": v[:, :c], "std": v[:, c:2*c], "max": v[:, 2*c:], "avgstd": v[:, :2*c]}[pool]
    return sel
def rep(split, tapset, pool, unit=True):
    parts = [part(split, t, pool) for t in tapset]
    if unit:
        parts = [p / np.linalg.norm(p, axis=1, keepdims=True) for p in parts]
    x = np.concatenate(parts, 1)
    return x / np.linalg.norm(x, axis=1, keepdims=True) if unit else x
def aurocs(split, s):
    y = f[f"{split}_labels"]
    c = f[f"{split}_class"]
    out = {"ALL": roc_auc_score(y, s)}
    for k, n in enumerate(names):
        m = (c == k)
        if y[m].min() == 1:
            mm = m | (y == 0)
            out[n] = roc_auc_score(y[mm], s[mm])
    return out
def knn(tr, x, k):
    d = 1 - x @ tr.T
    return np.sort(d, 1)[:, :k].mean(1)
def maha(tr, xs):
    lw = LedoitWolf().fit(tr)
    P = lw.precision_
    mu = lw.location_
    return [np.einsum("ij,jk,ik->i", x - mu, P, x - mu) for x in xs]
configs = []
singles = [(t,) for t in taps]
for tapset in singles + [("blocks.4", "blocks.6"), ("blocks.3", "blocks.4", "blocks.5", "blocks.6"), ("blocks.5", "pre_logits"), ("blocks.2","blocks.3","blocks.4","blocks.5","blocks.6","pre_logits")]:
    for pool in (["avg"] if tapset == ("pre_logits",) else ["avg", "avgstd", "max"]):
        configs.append((tapset, pool))
heads = sys.argv[2].split(",") if len(sys.argv) > 2 else ["knn", "maha", "ocsvm"]
print(f"{'taps':44s} {'pool':6s} {'head':10s} {'val':>6s} {'test':>6s}   test per class")
for tapset, pool in configs:
    tr, va, te = (rep(s, tapset, pool) for s in ("train", "val", "test"))
    results = {}
    if "knn" in heads:
        for k in (1, 10):
            results[f"knn{k}"] = (knn(tr, va, k), knn(tr, te, k))
    if "maha" in heads:
        tru, vau, teu = (rep(s, tapset, pool, unit=False) for s in ("train", "val", "test"))
        results["maha"] = tuple(maha(tru, [vau, teu]))
        results["maha_u"] = tuple(maha(tr, [va, te]))
    if "ocsvm" in heads:
        nus = [0.1, 0.5]
        W, b = fit_linear_ocsvms(torch.from_numpy(tr[::3]), nus)
        for i, nu in enumerate(nus):
            w = W[i].numpy()
            results[f"svm{nu}"] = (-(va @ w + b[i].item()), -(te @ w + b[i].item()))
    for h, (sv, st) in results.items():
        av, at = aurocs("val", sv), aurocs("test", st)
        print(f"{'+'.join(tapset):44s} {pool:6s} {h:10s} {av['ALL']:.3f}  {at['ALL']:.3f}   " + " ".join(f"{n}:{at[n]:.2f}" for n in names if n in at), flush=True)
