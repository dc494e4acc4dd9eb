"""Benchmark: eager torch (``adlight predict``'s path) vs ONNX Runtime vs OpenVINO on a CPU.

    python benchmarks/export_latency.py --root ../shared/data/mvtec_ad --category bottle \
        [--only ae|patchcore] [--repeats 20] [--threads 2]

Fits the shipped L2 AE (``fadaeinejad/mvtec_ae_l2``, 128 px, one short epoch: latency does not
depend on how well it is trained) and the shipped PatchCore (``patch_features/mvtec_patchcore``,
256 px), exports each to ONNX and OpenVINO, then measures, each runtime in a fresh process:
latency per image at batch 1 (median of ``--repeats``), throughput at batch 32 and peak resident
memory (VmHWM) of that process. PatchCore's eager path is also run with its torch search
(``eager_torch_search``) beside the default faiss one, to show where its time goes. Prints a Markdown table and the command.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {
    "ae": ("fadaeinejad/mvtec_ae_l2.yaml", 128,
           ["--trainer.max_epochs=1", "--trainer.limit_train_batches=4", "--model.pixel_threshold=0.2"]),
    "patchcore": ("patch_features/mvtec_patchcore.yaml", 256, []),
}

# one runtime in its own process: its peak RSS is its own
MEASURE = r"""
import json, statistics, sys, time
import numpy as np
runtime, folder, config, ckpt, size, repeats, threads = sys.argv[1:8]
size, repeats, threads = int(size), int(repeats), int(threads)
rng = np.random.default_rng(0)
one, many = (rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8) for n in (1, 32))
if runtime.startswith("eager"):
    import torch
    torch.set_num_threads(threads)
    from adlight.cli import AdlightCLI
    from adlight.export.command import load_fitted
    model, _ = load_fitted(AdlightCLI, ["--config", config, "--data.root", sys.argv[8]], ckpt)
    model.eval()
    if runtime == "eager_torch_search":  # PatchCore: blocked torch products instead of faiss
        model.search = "torch"
    def run(batch):
        with torch.no_grad():  # predict_step's model call: anomaly_outputs on [0, 1] floats
            return model.anomaly_outputs({"image": torch.from_numpy(batch).float() / 255})
else:
    from adlight.inference import Inferencer
    inferencer = Inferencer(folder, threads=threads)
    run = lambda batch: inferencer.predict(batch, batch_size=32)
run(one); run(many)  # warm-up
times = []
for _ in range(repeats):
    start = time.perf_counter(); run(one); times.append(time.perf_counter() - start)
start = time.perf_counter(); run(many); run(many); batch_time = (time.perf_counter() - start) / 2
print(json.dumps({"latency_ms": 1000 * statistics.median(times), "throughput": 32 / batch_time,
                  # VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent
                  "peak_mb": int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024}))
"""


def fit_and_export(name: str, root: str, category: str, workdir: Path) -> tuple[str, str, int, dict]:
    from adlight.cli import main

    config, size, extra = MODELS[name]
    config = str(ROOT / "configs" / config)
    args = [f"--config={config}", f"--data.root={root}", f"--data.category={category}",
            f"--data.image_size={size}", f"--trainer.default_root_dir={workdir / name}",
            "--trainer.enable_progress_bar=false", "--test_after_fit=false", *extra]
    main(["fit", *args])
    ckpt = str(sorted((workdir / name).rglob("*.ckpt"))[-1])
    folders = {}
    for fmt in ("onnx", "openvino"):
        folders[fmt] = str(workdir / f"{name}_{fmt}")
        main(["export", f"--config={config}", f"--data.root={root}", f"--data.category={category}",
              f"--data.image_size={size}", f"--ckpt_path={ckpt}", f"--format={fmt}", f"--out={folders[fmt]}"])
    return config, ckpt, size, folders


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="../shared/data/mvtec_ad")
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--only", choices=sorted(MODELS), nargs="*", default=sorted(MODELS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    options = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in options.only:
            config, ckpt, size, folders = fit_and_export(name, options.root, options.category, Path(tmp))
            extra = ("eager_torch_search",) if name == "patchcore" else ()
            for runtime in ("eager", *extra, "onnx", "openvino"):
                done = subprocess.run(
                    [sys.executable, "-c", MEASURE, runtime, folders.get(runtime, ""), config, ckpt,
                     str(size), str(options.repeats), str(options.threads), options.root],
                    capture_output=True, text=True, cwd=ROOT, check=True)
                result = json.loads(done.stdout.strip().splitlines()[-1])
                rows.append((name, size, runtime, result))
    print(f"\n{date.today()}, {platform.processor() or platform.machine()}, {options.threads} threads\n")
    print("| model | px | runtime | latency, batch 1 (ms/image) | throughput, batch 32 (images/s) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    for name, size, runtime, r in rows:
        print(f"| {name} | {size} | {runtime} | {r['latency_ms']:.1f} | {r['throughput']:.1f} | {r['peak_mb']:.0f} |")
    print(f"\ncommand: python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
