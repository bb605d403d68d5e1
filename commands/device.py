"""Device commands: ``build`` (TensorRT engine, torch-free) and ``verify`` (any two artifacts)."""

# ruff: noqa: UP045  (typer reads the option groups' annotations at run time: Optional for Python 3.10)

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional

import typer

from commands import groups
from commands import options as opt
from contract.errors import UsageError
from contract.output import check_file, write_file
from contract.vocabulary import PRECISIONS
from runtime.tools.compare.policy import POLICIES

if TYPE_CHECKING:
    from runtime.tools.compare import ParityPolicy
    from runtime.tools.compare.engine import ComparisonReport
    from runtime.tools.compare.layerwise import LayerReport
    from runtime.tools.engine_build import EngineOptions


@dataclass(frozen=True)
class EngineFlags:
    """How TensorRT builds the engine (``runtime.tools.engine_build.EngineOptions``)."""

    precision: Optional[str] = groups.declared(
        opt.choice_option(
            None,
            "--precision",
            "fp32 | fp16 | int8 (default: the graph's; FP32 graphs: flags on TRT 10).",
            PRECISIONS,
            "{flag} {value}: choose fp32, fp16 or int8",
        )
    )
    calib_cache: Optional[str] = groups.option(
        None, "--calib-cache", help="TRT 10 weakly typed INT8: calibration cache."
    )
    timing_cache: Optional[str] = groups.option(
        None, "--timing-cache", help="Timing cache to reuse and update."
    )
    workspace: int = groups.declared(
        opt.int_option(2048, "--workspace", "Builder workspace limit in MiB.", 1)
    )
    dla_core: Optional[int] = groups.declared(
        opt.int_option(None, "--dla-core", "Build for this DLA core (Jetson).", 0)
    )
    gpu_fallback: bool = groups.option(
        False, "--gpu-fallback", help="DLA: run unsupported layers on the GPU."
    )
    opt_level: Optional[int] = groups.declared(
        opt.int_option(None, "--opt-level", "Builder optimisation level 0-5 (TensorRT: 3).", 0, 5)
    )


@dataclass(frozen=True)
class ProfileFlags:
    """A dynamic export's optimisation profile and how many copies of it the engine holds."""

    min_shape: Optional[str] = groups.option(
        None, "--min", help="Dynamic exports: profile min, NxCxHxW or HxW."
    )
    opt_shape: Optional[str] = groups.option(
        None, "--opt", help="Dynamic exports: profile opt (default: default_size)."
    )
    max_shape: Optional[str] = groups.option(None, "--max", help="Dynamic exports: profile max.")
    contexts: int = groups.declared(
        opt.int_option(1, "--contexts", "Profile copies: execution contexts that run at once.", 1, 64)
    )


def _engine_options(
    engine: EngineFlags, profile: ProfileFlags, log: str | None, exist_ok: bool, overwrite: bool
) -> EngineOptions:
    """The API's options from ``build``'s flags (paths as ``Path``, the profile's shapes parsed)."""
    from pathlib import Path

    from runtime.tools.engine_build import EngineOptions, profiles_from_options

    lo, mid, hi = profiles_from_options([profile.min_shape, profile.opt_shape, profile.max_shape])
    path = lambda text: Path(text) if text else None  # noqa: E731
    return EngineOptions(
        precision=engine.precision, calibration_cache=path(engine.calib_cache),  # type: ignore[arg-type]
        timing_cache=path(engine.timing_cache), workspace_mib=engine.workspace, min_shape=lo,
        opt_shape=mid, max_shape=hi, builder_optimization_level=engine.opt_level,
        dla_core=engine.dla_core, gpu_fallback=engine.gpu_fallback, contexts=profile.contexts,
        log_path=path(log), exist_ok=exist_ok, overwrite=overwrite,
    )  # fmt: skip


@groups.with_groups
def build_command(
    artifact: str = typer.Argument(..., help="The ONNX artifact (.onnx with its .json, or their folder)."),
    *,
    out: str = typer.Option(
        ..., "--out", help="Output folder (STEM.PRECISION.engine + .json) or .engine file."
    ),
    engine: EngineFlags,
    profile: ProfileFlags,
    log: str = typer.Option(None, "--log", help="Write TensorRT's build log here."),
    exist_ok: bool = opt.exist_ok_option("Allow an --out folder holding other files (ours are added)."),
    overwrite: bool = opt.overwrite_option(
        "Replace an existing --out .engine / --log file, or files in --out pem-deploy did not write."
    ),
) -> None:
    """Torch-free TensorRT engine from an ONNX artifact (TensorRT + numpy + onnx only; run on the device)."""
    from runtime.tools.engine_build import build_engine

    options = _engine_options(engine, profile, log, exist_ok, overwrite)
    typer.echo(build_engine(artifact, out, options).summary())


@dataclass(frozen=True)
class ReferenceFlags:
    """What ``verify`` compares with: a reference artifact, or reference outputs saved earlier."""

    against: Optional[str] = groups.option(None, "--against", help="Reference artifact (e.g. the FP32 ONNX).")
    images: Optional[str] = groups.option(None, "--images", help="Also compare on the images of this folder.")
    save_reference: Optional[str] = groups.option(
        None, "--save-reference", help="Also save the reference outputs (.npz)."
    )
    load_reference: Optional[str] = groups.option(
        None, "--load-reference", help="Reference outputs saved elsewhere."
    )


@dataclass(frozen=True)
class VerifyPolicyFlags:
    """``verify``'s own sampling and policy flags (beside :class:`opt.ComparisonFlags`)."""

    seed: int = groups.declared(opt.int_option(0, "--seed", "Seed of the generated images.", 0))
    limit: Optional[int] = groups.declared(
        opt.int_option(None, "--limit", "At most N images of --images.", 1)
    )
    precision: Optional[str] = groups.declared(
        opt.choice_option(
            None,
            "--policy",
            "Policy fp32 | fp16 | int8 (default: the candidate's).",
            tuple(POLICIES),
            "{flag} {value}: choose {allowed}",
        )
    )
    min_segments: Optional[float] = groups.declared(
        opt.float_option(None, "--min-segment-match", "Minimum panoptic segment match.", opt.SHARE)
    )


@dataclass(frozen=True)
class VerifyReportFlags:
    """What ``verify`` writes besides its table: the layer-by-layer comparison and the JSON report."""

    layerwise: bool = groups.option(
        False,
        "--layerwise",
        help="Also compare every intermediate tensor (two ONNX files) and name the first that breaks.",
    )
    json_out: Optional[str] = groups.option(None, "--json", help="Write the report as JSON here.")
    overwrite: bool = groups.declared(
        opt.overwrite_option("Replace an existing --json / --save-reference file.")
    )

    def refuse_early(self, reference: ReferenceFlags, read: list[str]) -> None:
        """Refuse a --json file that exists or a --layerwise without --against before comparing."""
        if self.json_out:
            check_file(self.json_out, overwrite=self.overwrite, inputs=read)
        if self.layerwise and reference.against is None:
            raise UsageError(
                "--layerwise needs --against REFERENCE.onnx (a saved reference holds the outputs only)"
            )

    def write_json(self, report: ComparisonReport, layers: LayerReport | None, read: list[str]) -> None:
        """The report (and the layer comparison) as JSON at --json, if given."""
        if self.json_out:
            payload = {**report.to_dict(), **({"layerwise": layers.to_dict()} if layers is not None else {})}
            write_file(
                self.json_out, json.dumps(payload, indent=2) + "\n", overwrite=self.overwrite, inputs=read
            )


@groups.with_groups
def verify_command(
    candidate: str = typer.Argument(..., help="The artifact to verify (engine or ONNX, sidecar beside it)."),
    *,
    reference: ReferenceFlags,
    comparison: opt.ComparisonFlags,
    flags: VerifyPolicyFlags,
    writes: VerifyReportFlags,
    providers: opt.Providers = None,
) -> None:
    """Compare two artifacts on the same images under the shared parity policy (torch-free).

    Exit code 0 when the policy holds, 1 when not (FAIL), 2 on bad arguments or files.
    """
    from runtime.tools.verify import verify, verify_inputs

    ref = reference
    read = verify_inputs(candidate, ref.against, ref.load_reference, ref.images)  # never written
    writes.refuse_early(ref, read)
    report = verify(
        candidate, against=ref.against, load_reference_from=ref.load_reference,
        save_reference_to=ref.save_reference, images=ref.images, noise=comparison.noise,
        scenes=comparison.scenes, seed=flags.seed, limit=flags.limit,
        policy=comparison.policy(candidate, flags.precision, flags.min_segments),
        providers=opt.provider_list(providers), overwrite=writes.overwrite,
    )  # fmt: skip
    typer.echo(report.table())
    layers = _compare_layers(candidate, ref, report.policy) if writes.layerwise else None
    if ref.save_reference:
        typer.echo(f"reference saved to {ref.save_reference}")
    if writes.json_out:
        payload = {**report.to_dict(), **({"layerwise": layers.to_dict()} if layers is not None else {})}
        write_file(
            writes.json_out, json.dumps(payload, indent=2) + "\n", overwrite=writes.overwrite, inputs=read
        )
    if not report.passed:
        raise typer.Exit(code=1)


def _compare_layers(candidate: str, reference: ReferenceFlags, policy: ParityPolicy) -> LayerReport:
    """``verify --layerwise``: every intermediate tensor of the two ONNX files, printed."""
    from runtime.tools.compare.layerwise import compare_layers

    layers = compare_layers(
        candidate, against=reference.against, load_reference_from=reference.load_reference, policy=policy
    )
    typer.echo(layers.table())
    return layers
