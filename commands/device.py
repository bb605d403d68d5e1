"""Device commands: ``build`` (TensorRT engine, torch-free) and ``verify`` (any two artifacts)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer

from commands import options as opt
from contract.errors import UsageError
from contract.output import check_file, write_file
from contract.vocabulary import PRECISIONS
from runtime.tools.compare.policy import POLICIES

if TYPE_CHECKING:
    from runtime.tools.compare import ParityPolicy
    from runtime.tools.compare.layerwise import LayerReport


def build_command(
    artifact: str = typer.Argument(..., help="The ONNX artifact (.onnx with its .json, or their folder)."),
    out: str = typer.Option(
        ..., "--out", help="Output folder (STEM.PRECISION.engine + .json) or .engine file."
    ),
    precision: str = opt.choice_option(
        None,
        "--precision",
        "fp32 | fp16 | int8 (default: the graph's; FP32 graphs: flags on TRT 10).",
        PRECISIONS,
        "{flag} {value}: choose fp32, fp16 or int8",
    ),
    calib_cache: str = typer.Option(
        None, "--calib-cache", help="TRT 10 weakly typed INT8: calibration cache."
    ),
    timing_cache: str = typer.Option(None, "--timing-cache", help="Timing cache to reuse and update."),
    workspace: int = opt.int_option(2048, "--workspace", "Builder workspace limit in MiB.", 1),
    dla_core: int = opt.int_option(None, "--dla-core", "Build for this DLA core (Jetson).", 0),
    gpu_fallback: bool = typer.Option(
        False, "--gpu-fallback", help="DLA: run unsupported layers on the GPU."
    ),
    opt_level: int = opt.int_option(
        None, "--opt-level", "Builder optimisation level 0-5 (TensorRT: 3).", 0, 5
    ),
    min_shape: str = typer.Option(None, "--min", help="Dynamic exports: profile min, NxCxHxW or HxW."),
    opt_shape: str = typer.Option(
        None, "--opt", help="Dynamic exports: profile opt (default: default_size)."
    ),
    max_shape: str = typer.Option(None, "--max", help="Dynamic exports: profile max."),
    contexts: int = opt.int_option(
        1, "--contexts", "Profile copies: execution contexts that run at once.", 1, 64
    ),
    log: str = typer.Option(None, "--log", help="Write TensorRT's build log here."),
    exist_ok: bool = opt.exist_ok_option("Allow an --out folder holding other files (ours are added)."),
    overwrite: bool = opt.overwrite_option(
        "Replace an existing --out .engine / --log file, or files in --out pem-deploy did not write."
    ),
) -> None:
    """Torch-free TensorRT engine from an ONNX artifact (TensorRT + numpy + onnx only; run on the device)."""
    from pathlib import Path

    from runtime.tools.engine_build import EngineOptions, build_engine, profiles_from_options

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
        exist_ok=exist_ok,
        overwrite=overwrite,
    )
    typer.echo(build_engine(artifact, out, options).summary())


def verify_command(
    candidate: str = typer.Argument(..., help="The artifact to verify (engine or ONNX, sidecar beside it)."),
    against: str = typer.Option(None, "--against", help="Reference artifact (e.g. the FP32 ONNX)."),
    images: str = typer.Option(None, "--images", help="Also compare on the images of this folder."),
    save_reference: str = typer.Option(
        None, "--save-reference", help="Also save the reference outputs (.npz)."
    ),
    load_reference: str = typer.Option(None, "--load-reference", help="Reference outputs saved elsewhere."),
    noise: opt.CompareNoise = 0,
    scenes: opt.CompareScenes = 4,
    seed: int = opt.int_option(0, "--seed", "Seed of the generated images.", 0),
    limit: int = opt.int_option(None, "--limit", "At most N images of --images.", 1),
    precision: str = opt.choice_option(
        None,
        "--policy",
        "Policy fp32 | fp16 | int8 (default: the candidate's).",
        tuple(POLICIES),
        "{flag} {value}: choose {allowed}",
    ),
    max_rel: opt.MaxRelError = None,
    min_agreement: opt.MinAgreement = None,
    min_miou: opt.MinMiou = None,
    min_segments: float = opt.float_option(
        None, "--min-segment-match", "Minimum panoptic segment match.", opt.SHARE
    ),
    layerwise: bool = typer.Option(
        False,
        "--layerwise",
        help="Also compare every intermediate tensor (two ONNX files) and name the first that breaks.",
    ),
    providers: opt.Providers = None,
    json_out: str = typer.Option(None, "--json", help="Write the report as JSON here."),
    overwrite: bool = opt.overwrite_option("Replace an existing --json / --save-reference file."),
) -> None:
    """Compare two artifacts on the same images under the shared parity policy (torch-free).

    Exit code 0 when the policy holds, 1 when not (FAIL), 2 on bad arguments or files.
    """
    from runtime.core.artifact import load_artifact
    from runtime.tools.compare import PolicyOverrides, policy_from_overrides
    from runtime.tools.verify import verify, verify_inputs

    read = verify_inputs(candidate, against, load_reference, images)  # never written, whatever the flags
    if json_out:  # refused before the comparison runs
        check_file(json_out, overwrite=overwrite, inputs=read)
    if layerwise and against is None:
        raise UsageError(
            "--layerwise needs --against REFERENCE.onnx (a saved reference holds the outputs only)"
        )
    overrides = PolicyOverrides(precision, max_rel, min_agreement, min_miou, min_segments)
    policy = policy_from_overrides(overrides, lambda: load_artifact(candidate).precision)
    report = verify(
        candidate, against=against, load_reference_from=load_reference, save_reference_to=save_reference,
        images=images, noise=noise, scenes=scenes, seed=seed, limit=limit, policy=policy,
        providers=opt.provider_list(providers), overwrite=overwrite,
    )  # fmt: skip
    typer.echo(report.table())
    layers = _compare_layers(candidate, against, load_reference, report.policy) if layerwise else None
    if save_reference:
        typer.echo(f"reference saved to {save_reference}")
    if json_out:
        payload = {**report.to_dict(), **({"layerwise": layers.to_dict()} if layers is not None else {})}
        write_file(json_out, json.dumps(payload, indent=2) + "\n", overwrite=overwrite, inputs=read)
    if not report.passed:
        raise typer.Exit(code=1)


def _compare_layers(
    candidate: str, against: str, load_reference: str | None, policy: ParityPolicy
) -> LayerReport:
    """``verify --layerwise``: every intermediate tensor of the two ONNX files, printed."""
    from runtime.tools.compare.layerwise import compare_layers

    layers = compare_layers(candidate, against=against, load_reference_from=load_reference, policy=policy)
    typer.echo(layers.table())
    return layers
