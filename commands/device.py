"""Device commands: ``build`` (TensorRT engine, torch-free) and ``verify`` (any two artifacts)."""

from __future__ import annotations

import typer

from commands import options as opt
from commands.common import fail as _fail


def build_command(
    artifact: str = typer.Argument(..., help="The ONNX artifact (.onnx with its .json, or their folder)."),
    out: str = typer.Option(
        ..., "--out", help="Output folder (STEM.PRECISION.engine + .json) or .engine file."
    ),
    precision: str = typer.Option(
        None, "--precision", help="fp32 | fp16 | int8 (default: the graph's; FP32 graphs: flags on TRT 10)."
    ),
    calib_cache: str = typer.Option(
        None, "--calib-cache", help="TRT 10 weakly typed INT8: calibration cache."
    ),
    timing_cache: str = typer.Option(None, "--timing-cache", help="Timing cache to reuse and update."),
    workspace: int = typer.Option(
        2048, "--workspace", help="Builder workspace limit in MiB.", callback=opt.at_least("--workspace", 1)
    ),
    dla_core: int = typer.Option(
        None, "--dla-core", help="Build for this DLA core (Jetson).", callback=opt.at_least("--dla-core", 0)
    ),
    gpu_fallback: bool = typer.Option(
        False, "--gpu-fallback", help="DLA: run unsupported layers on the GPU."
    ),
    opt_level: int = typer.Option(
        None,
        "--opt-level",
        help="Builder optimisation level 0-5 (TensorRT: 3).",
        callback=opt.int_range("--opt-level", 0, 5),
    ),
    min_shape: str = typer.Option(None, "--min", help="Dynamic exports: profile min, NxCxHxW or HxW."),
    opt_shape: str = typer.Option(
        None, "--opt", help="Dynamic exports: profile opt (default: default_size)."
    ),
    max_shape: str = typer.Option(None, "--max", help="Dynamic exports: profile max."),
    contexts: int = typer.Option(
        1,
        "--contexts",
        help="Profile copies: execution contexts that run at once.",
        callback=opt.int_range("--contexts", 1, 64),
    ),
    log: str = typer.Option(None, "--log", help="Write TensorRT's build log here."),
) -> None:
    """Torch-free TensorRT engine from an ONNX artifact (TensorRT + numpy + onnx only; run on the device)."""
    from pathlib import Path

    from runtime.engine_build import EngineOptions, build_engine, profiles_from_options

    lo, mid, hi = profiles_from_options([min_shape, opt_shape, max_shape])
    options = EngineOptions(
        precision=precision,  # type: ignore[arg-type]
        calibration_cache=Path(calib_cache) if calib_cache else None,
        timing_cache=Path(timing_cache) if timing_cache else None,
        workspace_mib=workspace,
        min_shape=lo,
        opt_shape=mid,
        max_shape=hi,
        builder_optimization_level=opt_level,
        dla_core=dla_core,
        gpu_fallback=gpu_fallback,
        contexts=contexts,
        log_path=Path(log) if log else None,
    )
    typer.echo(build_engine(artifact, out, options).summary())


def verify_command(
    candidate: str = typer.Argument(..., help="The artifact to verify (engine or ONNX, sidecar beside it)."),
    against: str = typer.Option(None, "--against", help="Reference artifact (e.g. the FP32 ONNX)."),
    images: str = typer.Option(None, "--images", help="Compare on the images of this folder."),
    save_reference: str = typer.Option(
        None, "--save-reference", help="Also save the reference outputs (.npz)."
    ),
    load_reference: str = typer.Option(None, "--load-reference", help="Reference outputs saved elsewhere."),
    random: int = typer.Option(
        1,
        "--random",
        help="Random-noise images (without --images).",
        callback=opt.int_range("--random", 0, 1000),
    ),
    scenes: int = typer.Option(
        2,
        "--scenes",
        help="Synthetic street scenes (without --images).",
        callback=opt.int_range("--scenes", 0, 1000),
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the generated images.", callback=opt.at_least("--seed", 0)
    ),
    limit: int = typer.Option(
        None, "--limit", help="At most N images of --images.", callback=opt.at_least("--limit", 1)
    ),
    precision: str = typer.Option(
        None, "--policy", help="Policy fp32 | fp16 | int8 (default: the candidate's)."
    ),
    atol: float = typer.Option(
        None, "--atol", help="Absolute tolerance of scores / logits.", callback=opt.float_range("--atol", 0)
    ),
    rtol: float = typer.Option(
        None, "--rtol", help="Relative tolerance of scores / logits.", callback=opt.float_range("--rtol", 0)
    ),
    min_agreement: float = typer.Option(
        None,
        "--min-agreement",
        help="Minimum label agreement.",
        callback=opt.float_range("--min-agreement", 0, 1, min_open=True),
    ),
    min_segments: float = typer.Option(
        None,
        "--min-segment-match",
        help="Minimum panoptic segment match.",
        callback=opt.float_range("--min-segment-match", 0, 1, min_open=True),
    ),
    providers: str = typer.Option(None, "--providers", help="onnxruntime providers, comma-separated."),
    json_out: str = typer.Option(None, "--json", help="Write the report as JSON here."),
) -> None:
    """Compare two artifacts on the same images under the shared parity policy (torch-free).

    Exit code 0 when the thresholds hold, 1 when not, 2 on bad arguments or files.
    """
    import json
    from pathlib import Path

    from contract.fs import atomic_write_bytes
    from contract.parity_policy import POLICIES, policy_for
    from runtime.verify import verify

    if precision is not None and precision not in POLICIES:
        _fail(f"--policy {precision}: choose {', '.join(POLICIES)}")
    policy = None
    if (
        precision
        or atol is not None
        or rtol is not None
        or min_agreement is not None
        or min_segments is not None
    ):
        from runtime.artifact import load_artifact

        base = policy_for(precision or load_artifact(candidate).precision)
        policy = base.with_overrides(
            atol=atol, rtol=rtol, min_label_agreement=min_agreement, min_segment_match=min_segments
        )
    report = verify(
        candidate,
        against=against,
        load_reference_from=load_reference,
        save_reference_to=save_reference,
        images=images,
        random=random,
        scenes=scenes,
        seed=seed,
        limit=limit,
        policy=policy,
        providers=[p.strip() for p in providers.split(",")] if providers else None,
    )
    typer.echo(report.table())
    if save_reference:
        typer.echo(f"reference saved to {save_reference}")
    if json_out:
        atomic_write_bytes(Path(json_out), (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    if not report.passed:
        raise typer.Exit(code=1)
