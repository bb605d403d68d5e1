"""`--target` picks the INT8 Q/DQ layout: same option in export and calibrate, a default by format."""

import pytest
import typer.main
from typer.testing import CliRunner

from calib.errors import CalibrationError
from calib.graph import TARGETS, check_target, default_target
from cli import app


def _option(command: str, name: str) -> list[str]:
    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    return next(sorted(p.opts) for p in click_command.params if p.name == name)


def test_default_target_by_format() -> None:
    assert default_target("engine") == "tensorrt"  # TensorRT takes no UINT8 Q/DQ
    assert default_target("onnx") == "onnxruntime" == default_target()
    assert set(TARGETS) == {"onnxruntime", "tensorrt"}
    assert check_target("tensorrt") == "tensorrt"
    with pytest.raises(CalibrationError, match="--target fast: choose one of"):
        check_target("fast")


def test_export_and_calibrate_name_the_option_alike() -> None:
    assert _option("export", "target") == _option("calibrate", "target") == ["--layout", "--target"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--precision", "fp32", "--target", "tensorrt"], "--target are for --precision int8"),
        (
            [
                "--precision",
                "int8",
                "--calib-data",
                "synthetic",
                "--target",
                "onnxruntime",
                "--format",
                "engine",
            ],
            "TensorRT engines need --target tensorrt",
        ),
        (["--precision", "int8", "--calib-data", "synthetic", "--layout", "cpu"], "--target cpu: choose"),
    ],
)
def test_export_refuses_bad_targets_before_exporting(tmp_path, extra, message) -> None:
    out = tmp_path / "x"
    result = CliRunner().invoke(
        app, ["export", "--preset", "cityscapes-semantic-tiny", "--out", str(out), *extra]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output and not out.exists()


def test_sidecar_records_the_int8_target() -> None:
    from tests.helpers.sidecars import tiny_sidecar

    kwargs = dict(head="raw", ir_version=10)
    sidecar = tiny_sidecar(precision="int8", int8={"target": "onnxruntime"}, **kwargs)
    assert sidecar["int8"] == {"target": "onnxruntime"}
    from contract.sidecar import Sidecar

    typed = Sidecar.from_dict(sidecar)  # the typed schema keeps the record
    assert typed.provenance.int8 == {"target": "onnxruntime"}
    assert typed.to_dict()["int8"] == {"target": "onnxruntime"}
    assert "int8" not in tiny_sidecar(precision="fp32", **kwargs)
