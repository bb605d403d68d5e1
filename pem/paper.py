"""The paper's cost table (params, GFLOPs) and how each row was measured, for fidelity checks.

The paper counts FLOPs with fvcore (1 multiply-accumulate = 1 FLOP). Its Cityscapes rows are at
1024x2048; the semantic R50 row (240G) includes the semantic inference (class x mask product at
full resolution), the panoptic one (237G) does not. The ADE20K R50 rows match 640x640 without
post-processing, the ADE20K STDC rows 512x512 with it.

The Mask2Former R50 rows (the paper's baseline, 44.0 M, 519 G panoptic / 523 G semantic) are
counted on :mod:`pem.mask2former`; their 4 G difference is the semantic inference's class x mask
product at full resolution (100 x 19 x 1024 x 2048 MACs), so the semantic row includes it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperRow:
    """One row of the paper's tables and the setting that reproduces its FLOP count."""

    preset: str
    params_m: float
    gflops: float
    input_size: tuple[int, int]
    with_postprocess: bool
    architecture: str = "pem"  # or "mask2former": the baseline (pem.mask2former)

    @property
    def label(self) -> str:
        """The preset, prefixed by the architecture when it is not PEM."""
        return self.preset if self.architecture == "pem" else f"{self.architecture}: {self.preset}"


PAPER_ROWS: tuple[PaperRow, ...] = (
    PaperRow("cityscapes-panoptic-r50", 35.6, 237.0, (1024, 2048), False),
    PaperRow("cityscapes-semantic-r50", 35.6, 240.0, (1024, 2048), True),
    PaperRow("cityscapes-semantic-stdc1", 17.0, 92.0, (1024, 2048), False),
    PaperRow("cityscapes-semantic-stdc2", 21.0, 118.0, (1024, 2048), False),
    PaperRow("ade20k-panoptic-r50", 35.6, 47.0, (640, 640), False),
    PaperRow("ade20k-semantic-r50", 35.6, 46.9, (640, 640), False),
    PaperRow("ade20k-semantic-stdc1", 17.0, 16.0, (512, 512), True),
    PaperRow("ade20k-semantic-stdc2", 21.0, 19.3, (512, 512), True),
    PaperRow("cityscapes-panoptic-r50", 44.0, 519.0, (1024, 2048), False, "mask2former"),
    PaperRow("cityscapes-semantic-r50", 44.0, 523.0, (1024, 2048), True, "mask2former"),
)

PARAMS_TOLERANCE = 0.01
GFLOPS_TOLERANCE = 0.05


@dataclass(frozen=True)
class RowComparison:
    row: PaperRow
    params_m: float
    gflops: float

    @property
    def params_error(self) -> float:
        return abs(self.params_m - self.row.params_m) / self.row.params_m

    @property
    def gflops_error(self) -> float:
        return abs(self.gflops - self.row.gflops) / self.row.gflops

    @property
    def within_targets(self) -> bool:
        return self.params_error <= PARAMS_TOLERANCE and self.gflops_error <= GFLOPS_TOLERANCE


def compare_with_paper() -> list[RowComparison]:
    """Count every paper row with our model (meta device, no compute) and compare."""
    from pem.config import get_preset
    from pem.flops import count_cost

    rows = []
    for row in PAPER_ROWS:
        cost = count_cost(
            get_preset(row.preset),
            row.input_size,
            with_postprocess=row.with_postprocess,
            architecture=row.architecture,
        )
        rows.append(RowComparison(row, cost.params / 1e6, cost.gflops_fvcore))
    return rows


def comparison_markdown(rows: list[RowComparison]) -> str:
    """Markdown table of :func:`compare_with_paper`."""
    lines = [
        "| preset | input | post-proc | params (M) ours / paper | GFLOPs ours / paper | within 1% / 5% |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        h, w = r.row.input_size
        lines.append(
            f"| {r.row.label} | {h}x{w} | {'yes' if r.row.with_postprocess else 'no'} "
            f"| {r.params_m:.2f} / {r.row.params_m:.1f} (err {r.params_error:.1%}) "
            f"| {r.gflops:.1f} / {r.row.gflops:.1f} (err {r.gflops_error:.1%}) "
            f"| {'yes' if r.within_targets else 'NO'} |"
        )
    return "\n".join(lines)


#: The paper's Cityscapes R50 speeds (FPS, V100, 1024x2048): PEM and the Mask2Former baseline.
PAPER_FPS: dict[str, dict[str, float]] = {
    "cityscapes-panoptic-r50": {"pem": 13.8, "mask2former": 4.1},
    "cityscapes-semantic-r50": {"pem": 13.8, "mask2former": 6.6},
}


def paper_row(preset: str, architecture: str = "pem") -> PaperRow | None:
    """The paper's cost row of ``preset`` for ``architecture`` (``None`` if the paper has none)."""
    for row in PAPER_ROWS:
        if row.preset == preset and row.architecture == architecture:
            return row
    return None
