"""The INT8 and engine rules of ``pem-deploy export`` through the Python API (issue 26): a user of
``calib`` / ``export.pipeline`` gets the same refusals as the CLI, as typed errors."""

from __future__ import annotations

import pytest

from calib.errors import CalibrationError
from calib.int8 import Int8Options, int8_quantizer
from export.pipeline import ExportOptions, export_artifact
from export.source import load_source


@pytest.mark.parametrize(
    ("precision", "options", "engine", "message"),
    [
        (
            "fp32",
            Int8Options(target="tensorrt"),
            False,
            "--calib-data / --calib-cache / --target are for --precision int8",
        ),
        (
            "fp16",
            Int8Options(data="synthetic"),
            False,
            "--calib-data / --calib-cache / --target are for --precision int8",
        ),
        (
            "int8",
            Int8Options(target="onnxruntime"),
            True,
            "--target onnxruntime --format engine: TensorRT engines need --target tensorrt",
        ),
        ("int8", Int8Options(target="cpu"), False, "--target cpu: choose one of"),
    ],
)
def test_int8_rules_refuse_in_one_line(
    precision: str, options: Int8Options, engine: bool, message: str
) -> None:
    with pytest.raises(CalibrationError) as caught:
        int8_quantizer(precision, options, engine=engine)
    assert str(caught.value).startswith(message)


def test_int8_quantizer_by_precision_and_format() -> None:
    assert int8_quantizer("fp32", Int8Options()) is None
    assert int8_quantizer("int8", Int8Options()).layout == "onnxruntime"  # type: ignore[union-attr]
    engine = int8_quantizer("int8", Int8Options(method="minmax", images=3), engine=True)
    assert engine is not None and engine.layout == "tensorrt"
    assert (engine.config.method, engine.config.num_images, engine.config.data) == ("minmax", 3, "synthetic")


def test_engine_export_without_tensorrt_is_refused_before_anything_is_written(tmp_path) -> None:
    pytest.importorskip("onnx")
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("TensorRT is installed: the engine step runs (tests/test_tensorrt_engine.py)")
    from export.tensorrt_engine import TensorRTUnavailableError

    source = load_source(preset="cityscapes-semantic-tiny", height=64, width=64)
    out = tmp_path / "engine"
    with pytest.raises(TensorRTUnavailableError, match="TensorRT is not installed"):
        export_artifact(source, ExportOptions(out_dir=out, engine=True))
    assert not out.exists()


def test_train_config_with_overrides_keeps_unset_values() -> None:
    from pem.config import ConfigError
    from pem.train import train_preset

    recipe = train_preset("cityscapes-semantic-tiny")
    assert recipe.with_overrides(iterations=None, lr=None) == recipe
    changed = recipe.with_overrides(iterations=7, crop_size=(64, 128), num_points=11, amp=False)
    assert (changed.iterations, changed.amp) == (7, False)
    assert changed.augment.crop_size == (64, 128) and changed.loss.num_points == 11
    assert changed.augment.short_side == recipe.augment.short_side  # the rest of the group is kept
    with pytest.raises(ConfigError, match="invalid training option"):
        recipe.with_overrides(itterations=3)
