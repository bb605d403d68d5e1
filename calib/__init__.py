"""INT8 calibration (Q/DQ ONNX and TensorRT calibration caches).

- :class:`calib.calibrate.Int8Calibrator`: the ``int8_quantizer`` of
  :func:`export.pipeline.export_artifact` (FP32 model part -> explicit Q/DQ INT8 graph).
- :func:`calib.calibrate.calibrate_ranges`, :func:`calib.quantize.quantize_model`: the two steps.
- :mod:`calib.data`: calibration images (Cityscapes ``leftImg8bit/train``, any folder, synthetic).
- :mod:`calib.ranges`: min-max / percentile / entropy ranges.
- :mod:`calib.trt_cache`: TensorRT calibration caches (text format), written, parsed, reused.
- :mod:`calib.accuracy`: FP32 / FP16 / INT8 accuracy reports and the accuracy-aware mode.
- :mod:`calib.run`: the ``pem-deploy calibrate`` workflow.

Depends on ``export`` and ``runtime`` (never the other way round).
"""

from calib.calibrate import (
    CalibrationConfig,
    CalibrationRanges,
    Int8Calibrator,
    calibrate_ranges,
)
from calib.errors import CalibrationError
from calib.quantize import quantize_model

__all__ = [
    "CalibrationConfig",
    "CalibrationError",
    "CalibrationRanges",
    "Int8Calibrator",
    "calibrate_ranges",
    "quantize_model",
]
