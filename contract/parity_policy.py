"""The parity policy: how close an artifact must stay to its reference, per precision.

One table, used by ``pem-deploy check`` (artifact vs PyTorch), ``pem-deploy verify`` (any artifact
vs any other, e.g. a TensorRT engine vs the FP32 ONNX) and ``pem-deploy demo``, so that a verdict
means the same thing everywhere. Torch-free (numpy only).

Per precision of the *candidate*:

* ``tolerances``: float outputs held to ``max |candidate - reference| <= atol + rtol * max |reference|``
  (outputs not listed, e.g. FP16 logits, are reported but not held: their rounding is expected);
* ``min_label_agreement``: fraction of pixels whose predicted class agrees (semantic labels, the
  class map of the fused panoptic segments, or the semantic inference of raw logits);
* ``min_segment_match``: panoptic only, fraction of segments (of both sides) matched one-to-one by
  class and IoU > 0.5 (the panoptic-quality matching rule).

INT8 is held to 95 % label agreement: the trained default model's INT8 graph agrees on ~97 % of
the pixels of street scenes with FP32 while its accuracy against the ground truth (the calibration
report) equals FP32's; disagreements are boundary pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import numpy as np

from contract.errors import UsageError

SEGMENT_IOU = 0.5


@dataclass(frozen=True)
class Tolerance:
    """Absolute + relative tolerance of one float output."""

    atol: float
    rtol: float = 0.0

    def limit(self, reference_scale: float) -> float:
        """The largest allowed max abs error for a reference whose largest magnitude is given."""
        return self.atol + self.rtol * reference_scale


@dataclass(frozen=True)
class ParityPolicy:
    """Pass thresholds for one precision (see the module docstring)."""

    precision: str
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    min_label_agreement: float = 0.99
    min_segment_match: float = 0.9

    def with_overrides(
        self,
        *,
        atol: float | None = None,
        rtol: float | None = None,
        min_label_agreement: float | None = None,
        min_segment_match: float | None = None,
        outputs: tuple[str, ...] = ("pred_logits", "scores"),
    ) -> ParityPolicy:
        """A copy with command-line overrides (``atol`` / ``rtol`` apply to ``outputs``)."""
        tolerances = dict(self.tolerances)
        if atol is not None or rtol is not None:
            for name in outputs:
                old = tolerances.get(name, Tolerance(0.0, 0.0))
                tolerances[name] = Tolerance(
                    old.atol if atol is None else atol, old.rtol if rtol is None else rtol
                )
        for label, value in (
            ("min label agreement", min_label_agreement),
            ("min segment match", min_segment_match),
        ):
            if value is not None and not 0.0 <= value <= 1.0:
                raise UsageError(f"{label} {value}: must be between 0 and 1")
        return replace(
            self,
            tolerances=MappingProxyType(tolerances),
            min_label_agreement=self.min_label_agreement
            if min_label_agreement is None
            else min_label_agreement,
            min_segment_match=self.min_segment_match if min_segment_match is None else min_segment_match,
        )

    def float_failure(self, name: str, max_abs: float, reference_scale: float) -> str | None:
        """Why output ``name`` fails its tolerance (None: it passes or is not held)."""
        tol = self.tolerances.get(name)
        if tol is None or max_abs <= tol.limit(reference_scale):
            return None
        return (
            f"{name}: max abs error {max_abs:.3g} > {tol.limit(reference_scale):.3g} "
            f"(atol {tol.atol:g} + rtol {tol.rtol:g} x {reference_scale:.3g})"
        )

    def describe(self) -> str:
        """The thresholds, one line."""
        parts = [f"{n} <= {t.atol:g} + {t.rtol:g}|ref|" for n, t in self.tolerances.items()]
        parts.append(f"label agreement >= {self.min_label_agreement:.3%}")
        parts.append(f"panoptic segment match >= {self.min_segment_match:.1%}")
        return "; ".join(parts)


POLICIES: Mapping[str, ParityPolicy] = MappingProxyType(
    {
        "fp32": ParityPolicy(
            "fp32",
            MappingProxyType({"pred_logits": Tolerance(1e-3), "scores": Tolerance(1e-3)}),
            min_label_agreement=0.999,
            min_segment_match=0.99,
        ),
        "fp16": ParityPolicy(
            "fp16",
            MappingProxyType({"scores": Tolerance(0.02, 0.02)}),
            min_label_agreement=0.99,
            min_segment_match=0.95,
        ),
        "int8": ParityPolicy(
            "int8",
            MappingProxyType({"scores": Tolerance(0.1, 0.05)}),
            min_label_agreement=0.95,
            min_segment_match=0.85,
        ),
    }
)


def policy_for(precision: str) -> ParityPolicy:
    """The policy of a precision (``fp32`` / ``fp16`` / ``int8``); unknown ones get FP16's."""
    return POLICIES.get(str(precision).lower(), POLICIES["fp16"])


def segment_match(
    ref_ids: np.ndarray,
    ref_classes: Mapping[int, int],
    got_ids: np.ndarray,
    got_classes: Mapping[int, int],
) -> tuple[int, int, int]:
    """(matched, reference segments, candidate segments) between two panoptic id maps.

    Segments match when they have the same class and IoU > 0.5 (unique by construction, as in
    panoptic quality). ``*_classes`` map segment id -> class id; id 0 is void.
    """
    ref_ids = ref_ids.astype(np.int64, copy=False).ravel()
    got_ids = got_ids.astype(np.int64, copy=False).ravel()
    n_ref = int(ref_ids.max(initial=0)) + 1
    n_got = int(got_ids.max(initial=0)) + 1
    joint = np.bincount(ref_ids * n_got + got_ids, minlength=n_ref * n_got).reshape(n_ref, n_got)
    ref_area, got_area = joint.sum(1), joint.sum(0)
    matched = 0
    for r, r_cls in ref_classes.items():
        if r <= 0 or r >= n_ref:
            continue
        for g, g_cls in got_classes.items():
            if g <= 0 or g >= n_got or g_cls != r_cls:
                continue
            inter = joint[r, g]
            union = ref_area[r] + got_area[g] - inter
            if union and inter / union > SEGMENT_IOU:
                matched += 1
                break
    return matched, len([r for r in ref_classes if r > 0]), len([g for g in got_classes if g > 0])


def segment_match_rate(matched: int, n_ref: int, n_got: int) -> float:
    """Matched fraction of all segments of both sides (F1 of the matching; 1.0 when both are empty)."""
    total = n_ref + n_got
    return 1.0 if total == 0 else 2.0 * matched / total
