"""Benchmark: ``adlight serve`` under concurrent clients, beside the Inferencer it wraps.

    python benchmarks/serve_load.py --exported EXPORTED_DIR \
        --images ../shared/data/mvtec_ad/bottle/test [--requests 64] [--threads N]

Back to back in one script, so that both see the same machine: the Inferencer's own latency
at batch 1 (one file per ``predict``, decoding included, median) and throughput at batch 32;
then the server (``python -m adlight.serve``, a subprocess on 127.0.0.1) without dynamic
batching (``--max_batch_size 1``) and with it (``--max_batch_size 4`` and ``16``, ``--batch_timeout 0.005``),
each driven by 1, 4 and 16 concurrent httpx clients posting the files as raw bodies:
requests/s, p50 and p99 latency, failed requests; then the Inferencer again (the load of a
shared machine moves between the two). Prints a Markdown table and the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path

import httpx
import numpy as np

from adlight.image_files import list_images
from adlight.inference import Inferencer

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = {"no batching": ["--max_batch_size", "1"],
            "dynamic batching, max 4": ["--max_batch_size", "4", "--batch_timeout", "0.005"],
            "dynamic batching, max 16": ["--max_batch_size", "16", "--batch_timeout", "0.005"]}


def inferencer_numbers(folder: str, files: list[Path], threads: int | None, repeats: int) -> tuple[float, float]:
    """(median ms per image at batch 1, images/s at batch 32), files decoded by predict."""
    inferencer = Inferencer(folder, threads=threads)
    inferencer.predict(files[:2])  # warm-up
    latencies = []
    for i in range(repeats):
        start = time.perf_counter()
        inferencer.predict([files[i % len(files)]])
        latencies.append(time.perf_counter() - start)
    batch = [files[i % len(files)] for i in range(32)]
    rates = []
    for _ in range(3):
        start = time.perf_counter()
        inferencer.predict(batch, batch_size=32)
        rates.append(32 / (time.perf_counter() - start))
    return 1000 * statistics.median(latencies), max(rates)


def start_server(folder: str, flags: list[str], threads: int | None) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "adlight.serve", "--exported", folder, "--port", str(port), *flags]
    if threads:
        command += ["--threads", str(threads)]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.Client(trust_env=False).get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"server did not start: {process.communicate()[1][-2000:]}")


def load(url: str, bodies: list[bytes], clients: int, requests: int) -> dict:
    """``requests`` posts from ``clients`` threads, each with its own connection."""
    latencies: list[float] = []
    failures = 0

    def client(index: int) -> None:
        nonlocal failures
        with httpx.Client(timeout=300, trust_env=False) as session:
            for j in range(index, requests, clients):
                start = time.perf_counter()
                try:
                    ok = session.post(f"{url}/predict", content=bodies[j % len(bodies)]).status_code == 200
                except httpx.HTTPError:
                    ok = False
                latencies.append(time.perf_counter() - start)
                failures += not ok

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, range(clients)))
    wall = time.perf_counter() - start
    ms = 1000 * np.asarray(latencies)
    return {"rps": requests / wall, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)),
            "failed": failures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exported", required=True)
    parser.add_argument("--images", required=True, help="a folder of test images (searched recursively)")
    parser.add_argument("--requests", type=int, default=64, help="requests per client count")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads (Inferencer and worker)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    options = parser.parse_args()
    files = list_images(options.images)[:64]
    bodies = [path.read_bytes() for path in files]
    before = inferencer_numbers(options.exported, files, options.threads, repeats=24)
    rows = []
    for name, flags in SETTINGS.items():
        process, url = start_server(options.exported, flags, options.threads)
        try:
            load(url, bodies, 2, 4)  # warm-up
            for clients in options.clients:
                rows.append((name, clients, load(url, bodies, clients, max(options.requests, 2 * clients))))
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
    after = inferencer_numbers(options.exported, files, options.threads, repeats=24)
    print(f"\n{date.today()}, {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{os.getloadavg()[0]:.1f} (under load: other processes share the cores)\n")
    print("| | batch-1 latency (ms) | batch-32 throughput (images/s) |\n|---|---|---|")
    print(f"| Inferencer, before | {before[0]:.1f} | {before[1]:.1f} |")
    print(f"| Inferencer, after | {after[0]:.1f} | {after[1]:.1f} |\n")
    print("| server | clients | requests/s | p50 (ms) | p99 (ms) | failed |\n|---|---|---|---|---|---|")
    for name, clients, r in rows:
        print(f"| {name} | {clients} | {r['rps']:.1f} | {r['p50']:.1f} | {r['p99']:.1f} | {r['failed']} |")
    print(f"\n`python benchmarks/serve_load.py {' '.join(sys.argv[1:])}`")


if __name__ == "__main__":
    main()
