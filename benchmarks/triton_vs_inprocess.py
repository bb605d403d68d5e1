"""Triton (the generated Python-backend model around runtime.Segmenter, served by the real
``tritonserver`` of the nvidia-pytriton wheel) vs the same runtime in-process, same machine.

Throughput (images/s) and latency (ms per request, median and p90) at client concurrency 1 and 4,
over HTTP and gRPC, with the variants interleaved round by round so load drift hits all alike.
The images are uint8 BGR at ``--image-size`` (default 1024x2048, Cityscapes frames), the answer a
label map at that size (int32).

    PEM_TRITON_STUB_PYTHON=/path/to/numpy1-venv/bin/python \\
        python benchmarks/triton_vs_inprocess.py --artifact /tmp/defsem/model.onnx

(see tests/helpers/tritonserver.py for why the stub needs its own numpy<2 Python).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import cpu_description
from export.consumers import PackageOptions, package_artifact
from runtime import Segmenter
from tests.helpers.tritonserver import TritonServer, unavailable_reason


def _client(server: TritonServer, protocol: str):
    if protocol == "http":
        import tritonclient.http as module

        return module.InferenceServerClient(server.http_url)
    import tritonclient.grpc as module

    return module.InferenceServerClient(server.grpc_url)


def _triton_call(protocol: str, client, model: str, image: np.ndarray):
    module = __import__(f"tritonclient.{protocol}", fromlist=["InferInput"])
    tensor = module.InferInput("image", list(image.shape), "UINT8")
    tensor.set_data_from_numpy(image)
    out = client.infer(model, [tensor], outputs=[module.InferRequestedOutput("labels")])
    return out.as_numpy("labels")


def _run(factory, images: list[np.ndarray], concurrency: int) -> tuple[float, list[float]]:
    """Send ``images`` with ``concurrency`` workers; worker i calls ``factory(i)`` in its own
    thread for its callable (tritonclient's HTTP client must stay in the thread that made it).
    Returns the wall time and every request's latency."""
    latencies: list[float] = []
    lock = threading.Lock()
    chunks = [images[i::concurrency] for i in range(concurrency)]

    def worker(slot: int) -> None:
        call = factory(slot)
        for image in chunks[slot]:
            start = time.perf_counter()
            call(image)
            took = (time.perf_counter() - start) * 1e3
            with lock:
                latencies.append(took)

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    return time.perf_counter() - start, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--artifact", required=True, help="exported artifact (NAME.onnx)")
    parser.add_argument("--image-size", default="1024x2048", help="HxW of the client images")
    parser.add_argument("--requests", type=int, default=16, help="images per variant per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--instances", type=int, default=2, help="Triton instances of the model")
    args = parser.parse_args()
    reason = unavailable_reason()
    if reason:
        sys.exit(f"cannot run tritonserver here: {reason}")
    height, width = (int(v) for v in args.image_size.split("x"))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(args.requests)]
    tmp = Path(tempfile.mkdtemp(prefix="pem-bench-triton-"))
    try:
        options = PackageOptions("triton", instances=args.instances)
        bundle = package_artifact(args.artifact, tmp / "bundle", options)
        repo = tmp / "repository"
        shutil.copytree(bundle.root / "model_repository" / "pem_runtime", repo / "pem_runtime")
        # As many in-process segmenters as Triton instances, onnxruntime's default threads on both.
        local = [Segmenter.open(args.artifact) for _ in range(args.instances)]
        expected = local[0].predict(images[0]).labels
        with TritonServer(repo, timeout=300) as server:

            def remote(protocol: str):
                def factory(slot: int):
                    client = _client(server, protocol)
                    return lambda image: _triton_call(protocol, client, "pem_runtime", image)

                return factory

            for protocol in ("http", "grpc"):
                got = remote(protocol)(0)(images[0])
                assert np.array_equal(got, expected), f"{protocol}: labels differ from the runtime's"
            variants = {}
            for concurrency in (1, 4):
                variants[f"in-process c={concurrency}"] = (
                    concurrency,
                    lambda slot: local[slot % len(local)].predict,
                )
                for protocol in ("http", "grpc"):
                    variants[f"triton {protocol} c={concurrency}"] = (concurrency, remote(protocol))
            walls = {k: 0.0 for k in variants}
            lat: dict[str, list[float]] = {k: [] for k in variants}
            for concurrency, factory in variants.values():  # warm-up
                _run(factory, images[: concurrency * 2], concurrency)
            for r in range(args.rounds):
                order = list(variants) if r % 2 == 0 else list(reversed(variants))
                for name in order:
                    concurrency, factory = variants[name]
                    wall, latencies = _run(factory, images, concurrency)
                    walls[name] += wall
                    lat[name] += latencies
                    print(f"round {r + 1}/{args.rounds} {name}: {len(images) / wall:.2f} img/s", flush=True)
        rows = []
        for name in variants:
            values = sorted(lat[name])
            rows.append(
                {
                    "variant": name,
                    "images_per_s": round(len(values) / walls[name], 2),
                    "latency_ms_median": round(statistics.median(values), 1),
                    "latency_ms_p90": round(values[int(0.9 * (len(values) - 1))], 1),
                }
            )
        meta = {"image_size": [height, width], "instances": args.instances, **cpu_description()}
        print(json.dumps({**meta, "rows": rows}, indent=1))
        print("\n| variant | images/s | latency median ms | p90 ms |\n|---|---|---|---|")
        for row in rows:
            cells = (row["variant"], row["images_per_s"], row["latency_ms_median"], row["latency_ms_p90"])
            print("| " + " | ".join(str(c) for c in cells) + " |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
