"""The one comparison engine of ``check``, ``verify``, the demo and calibrate (torch-free).

- :mod:`.inputs`: the images (seeded street scenes, image files, diagnostic noise);
- :mod:`.engine`: one side's :class:`Prediction`, per-output :class:`OutputDiff`, the
  :class:`ComparisonReport` and :func:`compare_predictions`;
- :mod:`.policy`: the per-precision thresholds (:data:`POLICIES`);
- :mod:`.reference`: saved references (``.npz``, validated on load, no pickle);
- :mod:`.layerwise`: where two ONNX graphs part ways (``verify --layerwise``).
"""

from runtime.tools.compare.engine import (
    ComparisonError,
    ComparisonReport,
    Criterion,
    HeadSpec,
    OutputDiff,
    Prediction,
    SampleDiff,
    artifact_meta,
    compare_predictions,
    interpret,
    mean_iou,
    predict,
    predict_artifact,
    segment_match,
    segment_match_rate,
)
from runtime.tools.compare.inputs import DEFAULT_SCENES, ComparisonImage, comparison_images
from runtime.tools.compare.policy import (
    POLICIES,
    ParityPolicy,
    PolicyOverrides,
    policy_for,
    policy_from_overrides,
)
from runtime.tools.compare.reference import load_reference, save_reference

__all__ = [
    "DEFAULT_SCENES",
    "POLICIES",
    "ComparisonError",
    "ComparisonImage",
    "ComparisonReport",
    "Criterion",
    "HeadSpec",
    "OutputDiff",
    "ParityPolicy",
    "PolicyOverrides",
    "Prediction",
    "SampleDiff",
    "artifact_meta",
    "compare_predictions",
    "comparison_images",
    "interpret",
    "load_reference",
    "mean_iou",
    "policy_for",
    "policy_from_overrides",
    "predict",
    "predict_artifact",
    "save_reference",
    "segment_match",
    "segment_match_rate",
]
