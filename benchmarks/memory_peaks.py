"""Peak memory of export / check / calibrate / bench per model (issue 24): the README memory table.

Each step runs as its own ``pem-deploy`` process and its peak resident set size is read from the
kernel when it ends (``os.wait4``'s ``ru_maxrss``: the process's high-water mark, children not
included), so the numbers are what a user's machine must hold for that command alone.

Models: ``tiny`` (the trained default model, its own 256x512), ``stdc1`` and ``r50``
(``cityscapes-semantic-*`` presets with seeded random weights, 1024x2048). Steps:

- export: ``export --precision fp32`` (dynamo exporter, onnxslim);
- check: ``check`` of that artifact against PyTorch (one random input);
- calibrate: ``calibrate --data synthetic --calib-images 8 --no-report`` (INT8, onnxruntime layout);
- bench: ``bench`` of the FP32 artifact (onnxruntime CPU, 1 warm-up + 2 calls).

Usage: ``python benchmarks/memory_peaks.py --models tiny,stdc1,r50 --work /tmp/mem [--out peaks.json]``.
Run one at a time on a shared machine: R50 at 1024x2048 needs several GiB per step.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"tiny": None, "stdc1": "cityscapes-semantic-stdc1", "r50": "cityscapes-semantic-r50"}


def _source_args(model: str) -> list[str]:
    if MODELS[model] is not None:
        return ["--preset", str(MODELS[model])]
    sys.path.insert(0, str(ROOT))
    from pem.zoo import ensure_default_checkpoint

    return ["--checkpoint", str(ensure_default_checkpoint("default", progress=True))]


def _run(args: list[str], log: Path) -> dict[str, object]:
    """Run ``pem-deploy ARGS``; its wall time, exit code and peak RSS in MiB."""
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, str(ROOT / "cli.py"), *args], stdout=out, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
    return {
        "seconds": round(time.perf_counter() - start, 1),
        "exit": os.waitstatus_to_exitcode(status),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 0),  # Linux reports KiB
        "command": "pem-deploy " + " ".join(args),
    }


STEPS = ("export", "check", "calibrate", "bench")


def measure(model: str, work: Path, only: tuple[str, ...] = STEPS) -> dict[str, dict[str, object]]:
    folder = work / model
    folder.mkdir(parents=True, exist_ok=True)
    source = _source_args(model)
    steps = {
        "export": ["export", *source, "--out", str(folder / "fp32"), "--exist-ok"],
        "check": ["check", str(folder / "fp32"), "--random", "1", "--scenes", "0"],
        "calibrate": [
            "calibrate",
            *source,
            "--data",
            "synthetic",
            "--calib-images",
            "8",
            "--no-report",
            "--out",
            str(folder / "int8"),
            "--exist-ok",
        ],
        "bench": ["bench", str(folder / "fp32"), "--warmup", "1", "--iterations", "2"],
    }
    rows = {}
    for step, args in steps.items():
        if step not in only:
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {model}: {step}", flush=True)
        rows[step] = _run(args, folder / f"{step}.log")
        print(
            f"  {rows[step]['peak_rss_mib']:.0f} MiB, {rows[step]['seconds']} s, exit {rows[step]['exit']}",
            flush=True,
        )
    return rows


def markdown(results: dict[str, dict[str, dict[str, object]]]) -> str:
    steps = STEPS
    lines = ["| model | " + " | ".join(f"{s} peak MiB" for s in steps) + " |", "|---|" + "---|" * len(steps)]
    for model, rows in results.items():
        cells = []
        for s in steps:
            row = rows.get(s)
            cells.append(
                "-"
                if row is None
                else f"{row['peak_rss_mib']:.0f}" + ("" if row["exit"] == 0 else " (failed)")
            )
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default="tiny", help=f"comma-separated: {', '.join(MODELS)}")
    parser.add_argument("--work", type=Path, required=True, help="scratch folder for the artifacts and logs")
    parser.add_argument("--out", type=Path, default=None, help="write the results JSON here")
    parser.add_argument("--steps", default=",".join(STEPS), help="comma-separated subset of the steps")
    args = parser.parse_args()
    models = [m for m in args.models.split(",") if m]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {', '.join(unknown)} (choose from {', '.join(MODELS)})")
    only = tuple(s for s in args.steps.split(",") if s)
    if any(s not in STEPS for s in only):
        parser.error(f"--steps: choose from {', '.join(STEPS)}")
    results = {m: measure(m, args.work, only) for m in models}
    print(markdown(results))
    if args.out:
        payload = {"machine": {"cpu": platform.processor(), "cores": os.cpu_count()}, "results": results}
        args.out.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    main()
