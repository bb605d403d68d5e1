"""How `pem-deploy check` reports: readable columns, index outputs as equality, only real outputs."""

from pathlib import Path

from export.check import CheckResult
from export.parity import ParityReport, SampleResult, TensorDiff


def _report(label: str) -> ParityReport:
    diffs = {
        "labels": TensorDiff("labels", "int32", 3.0, 1.0, 0.01, 0.9995),
        "owner": TensorDiff("owner", "int64", 7.0, 1.0, 0.02, 0.999),
    }
    return ParityReport("semantic", "model.onnx", [SampleResult(label, diffs, 0.9995, 0.998)])


def test_long_image_paths_keep_the_columns_apart() -> None:
    label = "/data/cityscapes/leftImg8bit/val/frankfurt/frankfurt_000000_000294_leftImg8bit.png"
    rows = _report(label).table().splitlines()[2:]
    assert all(row.startswith(f"  {label}  ") for row in rows)


def test_index_outputs_are_reported_as_equality_not_float_error() -> None:
    table = _report("random 0").table()
    assert "(index output)" in table and "99.9000%" in table
    owner_row = next(row for row in table.splitlines() if "owner" in row)
    assert "7" not in owner_row.split("owner", 1)[1].split("(", 1)[0]  # no max abs of ids


def test_pass_line_names_only_outputs_the_model_has() -> None:
    result = CheckResult(
        Path("model.onnx"),
        {},
        [_report("random 0")],
        thresholds={"max_abs": {"scores": 1e-3, "pred_logits": 1e-3}, "min_label_agreement": 0.999},
    )
    summary = result.summary()
    assert "scores" not in summary and "pred_logits" not in summary
    assert summary.splitlines()[-1].startswith("PASS (model.onnx: label agreement >= 99.900%")
    assert "worst: equal labels 99.9500%, owner 99.9000%; label agreement" in summary
