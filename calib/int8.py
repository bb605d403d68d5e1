"""Which INT8 settings go with which export: the rules ``pem-deploy export`` applies, as an API.

:func:`int8_quantizer` turns an export's precision, output format and calibration settings into
the quantizer :func:`export.pipeline.export_artifact` takes (``None`` for float exports), or
refuses the combination with a :class:`CalibrationError` that names the flags::

    quantizer = int8_quantizer("int8", Int8Options(data="synthetic"), engine=True)
    export_artifact(source, ExportOptions(precision="int8", engine=True), int8_quantizer=quantizer)
"""

from __future__ import annotations

from dataclasses import dataclass

from calib.calibrate import CalibrationConfig, Int8Calibrator
from calib.errors import CalibrationError
from calib.graph import check_target, default_target
from calib.ranges import Method


@dataclass(frozen=True)
class Int8Options:
    """The calibration settings of an INT8 export (the CLI's ``--calib-*`` and ``--target``).

    Args:
        data: calibration images (a Cityscapes folder, an image folder or ``"synthetic"``);
            ``None``: the synthetic set.
        method: ``percentile`` | ``minmax`` | ``entropy``.
        images: how many calibration images to sample.
        cache: a TensorRT calibration cache to reuse instead of calibrating.
        target: the runtime the Q/DQ layout is for (``onnxruntime`` | ``tensorrt``); ``None``:
            ``tensorrt`` when an engine is built, else ``onnxruntime``.
    """

    data: str | None = None
    method: Method = "percentile"
    images: int = 200
    cache: str | None = None
    target: str | None = None

    @property
    def given(self) -> bool:
        """Whether any setting that only INT8 uses was given (data, cache or target)."""
        return self.data is not None or self.cache is not None or self.target is not None


def int8_quantizer(precision: str, options: Int8Options, *, engine: bool = False) -> Int8Calibrator | None:
    """The quantizer for an export at ``precision`` (``None`` unless ``int8``).

    ``engine``: a TensorRT engine is built from the graph, which takes the ``tensorrt`` layout only.

    Raises:
        CalibrationError: INT8 settings for a float export, an unknown target, or a target that
            the engine cannot take.
    """
    if precision != "int8":
        if options.given:
            raise CalibrationError("--calib-data / --calib-cache / --target are for --precision int8")
        return None
    target = check_target(options.target or default_target("engine" if engine else "onnx"))
    if target != "tensorrt" and engine:
        raise CalibrationError(f"--target {target} --format engine: TensorRT engines need --target tensorrt")
    config = CalibrationConfig(
        data=options.data or "synthetic",
        method=options.method,
        num_images=options.images,
        cache_file=options.cache,
    )
    return Int8Calibrator(config, layout=target)
