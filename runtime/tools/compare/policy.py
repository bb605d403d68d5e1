"""The parity policy: how close an artifact must stay to its reference, per precision of the candidate.

One table, used by ``check`` (artifact vs PyTorch), ``verify`` (artifact vs artifact or saved
reference), the demo's parity step and calibrate's FP32 / FP16 / INT8 report. Torch-free.

What is judged (the worst *deciding* sample decides; generated noise images never decide):

* ``max_relative_error[output]``: float outputs, ``mean |candidate - reference| / mean |reference|``
  (the error relative to the reference's own scale, robust to one near-tie query flipping);
* ``min_confident_agreement``: label agreement on the pixels where the reference is confident, i.e.
  farther than ``boundary`` of the short side from a reference class boundary and, where the outputs
  give per-pixel class scores (raw heads), with a top-1 / top-2 score margin of at least
  ``min_margin``. The share of low-margin pixels is reported (a rounding may flip a near-tie);
* ``min_miou``: mIoU between the two label maps over the classes covering at least
  ``miou_min_share`` (1 %) of the pixels on either side (void excluded; a class of a few pixels is
  all or nothing and would swing the mean by itself);
* ``min_segment_match``: panoptic heads, segments of both sides matched one-to-one by class and
  IoU > 0.5 (the panoptic-quality rule), as an F1;
* NaN or Inf in any output of either side fails, naming the output.

Outputs not held by a number (panoptic ``classes``, ``owner``, ``owner_fg``, ``mask_area``) are
judged through what they produce (labels and segments) and reported as such.
The thresholds were calibrated on the healthy / damaged corpus of ``tests/export/test_compare_corpus.py``
(README, "Parity verdicts").
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from contract.errors import UsageError

# Per head: outputs held to a relative error, and outputs judged through labels / segments.
FLOAT_OUTPUTS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"raw": ("pred_logits", "pred_masks"), "semantic": (), "panoptic": ("scores",)}
)
JUDGED_THROUGH: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "raw": MappingProxyType({}),
        "semantic": MappingProxyType({"labels": "label agreement and mIoU"}),
        "panoptic": MappingProxyType(
            {
                "classes": "segment match and labels",
                "owner": "segment match and labels",
                "owner_fg": "segment match and labels",
                "mask_area": "segment match",
            }
        ),
    }
)


@dataclass(frozen=True)
class ParityPolicy:
    """Pass thresholds for one precision (see the module docstring)."""

    precision: str
    max_relative_error: Mapping[str, float] = field(default_factory=dict)
    min_confident_agreement: float = 0.99
    min_miou: float = 0.95
    min_segment_match: float = 0.9
    boundary: float = 1 / 128
    min_margin: float = 0.05
    miou_min_share: float = 0.01

    def boundary_px(self, height: int, width: int) -> int:
        """Width in pixels of the band around reference class boundaries counted as low-margin."""
        return max(1, round(self.boundary * min(height, width)))

    def with_overrides(
        self,
        *,
        max_relative_error: float | None = None,
        min_confident_agreement: float | None = None,
        min_miou: float | None = None,
        min_segment_match: float | None = None,
    ) -> ParityPolicy:
        """A copy with command-line overrides (``max_relative_error`` applies to every float output)."""
        for label, value in (
            ("min label agreement", min_confident_agreement),
            ("min mIoU", min_miou),
            ("min segment match", min_segment_match),
        ):
            if value is not None and not 0.0 <= value <= 1.0:
                raise UsageError(f"{label} {value}: must be between 0 and 1")
        if max_relative_error is not None and not max_relative_error >= 0.0:
            raise UsageError(f"max relative error {max_relative_error}: must be >= 0")
        tolerances = dict(self.max_relative_error)
        if max_relative_error is not None:
            tolerances = {name: max_relative_error for name in tolerances}
        return replace(
            self,
            max_relative_error=MappingProxyType(tolerances),
            min_confident_agreement=_pick(min_confident_agreement, self.min_confident_agreement),
            min_miou=_pick(min_miou, self.min_miou),
            min_segment_match=_pick(min_segment_match, self.min_segment_match),
        )

    def describe(self, head: str | None = None) -> str:
        """The thresholds, one line (only the outputs ``head`` has, when given)."""
        names = FLOAT_OUTPUTS.get(head, ()) if head else tuple(self.max_relative_error)
        parts = [
            f"{n} rel. error <= {self.max_relative_error[n]:g}" for n in names if n in self.max_relative_error
        ]
        parts.append(f"confident-pixel label agreement >= {self.min_confident_agreement:.2%}")
        parts.append(f"mIoU >= {self.min_miou:.3f}")
        if head in (None, "panoptic"):
            parts.append(f"segment match >= {self.min_segment_match:.1%}")
        return f"{self.precision} policy: " + "; ".join(parts)


def _pick(value: float | None, default: float) -> float:
    return default if value is None else value


_FLOATS = ("pred_logits", "pred_masks", "scores")


def _table_row(
    precision: str, relative_error: float, agreement: float, miou: float, segments: float
) -> ParityPolicy:
    """One precision's thresholds: the same relative error for every float output."""
    return ParityPolicy(
        precision,
        MappingProxyType(dict.fromkeys(_FLOATS, relative_error)),
        min_confident_agreement=agreement,
        min_miou=miou,
        min_segment_match=segments,
    )


POLICIES: Mapping[str, ParityPolicy] = MappingProxyType(
    {
        "fp32": _table_row("fp32", 1e-3, agreement=0.9999, miou=0.99, segments=0.99),
        "fp16": _table_row("fp16", 0.02, agreement=0.999, miou=0.97, segments=0.9),
        "int8": _table_row("int8", 0.1, agreement=0.97, miou=0.85, segments=0.75),
    }
)


def policy_for(precision: str) -> ParityPolicy:
    """The policy of a precision (``fp32`` / ``fp16`` / ``int8``); unknown ones get FP16's."""
    return POLICIES.get(str(precision).lower(), POLICIES["fp16"])


@dataclass(frozen=True)
class PolicyOverrides:
    """A user's changes to the parity policy (``check`` / ``verify``'s ``--policy``, ``--max-rel-error``,
    ``--min-agreement``, ``--min-miou``, ``--min-segment-match``); ``None`` keeps the policy's value."""

    precision: str | None = None  # whose policy to start from (default: the candidate's precision)
    max_relative_error: float | None = None
    min_confident_agreement: float | None = None
    min_miou: float | None = None
    min_segment_match: float | None = None

    @property
    def given(self) -> bool:
        """Whether anything is overridden (else the comparison picks the candidate's own policy)."""
        thresholds = (
            self.max_relative_error,
            self.min_confident_agreement,
            self.min_miou,
            self.min_segment_match,
        )
        return self.precision is not None or any(v is not None for v in thresholds)


def policy_from_overrides(
    overrides: PolicyOverrides, candidate_precision: Callable[[], str]
) -> ParityPolicy | None:
    """The policy ``overrides`` ask for, or ``None`` when they change nothing (the comparison then
    uses the candidate's own). ``candidate_precision`` is asked only when no ``--policy`` is given.

    Raises :class:`UsageError` for an unknown policy or a threshold out of range.
    """
    if not overrides.given:
        return None
    if overrides.precision is not None and overrides.precision not in POLICIES:
        raise UsageError(f"--policy {overrides.precision}: choose {', '.join(POLICIES)}")
    return policy_for(overrides.precision or candidate_precision()).with_overrides(
        max_relative_error=overrides.max_relative_error,
        min_confident_agreement=overrides.min_confident_agreement,
        min_miou=overrides.min_miou,
        min_segment_match=overrides.min_segment_match,
    )
