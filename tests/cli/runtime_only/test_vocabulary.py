"""One vocabulary across commands: the same name for the same idea, older names as aliases, help
that reads right at 80 columns, and options that say when they do nothing."""

import json
import re

import pytest
import typer.main
from typer.testing import CliRunner

from cli import app
from tests.helpers.runtime_models import semantic_model, write_artifact

GROUP = typer.main.get_command(app)
COMMANDS = sorted(GROUP.commands)  # type: ignore[attr-defined]


def _help(command: str, columns: int = 80) -> str:
    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def _names(command: str, dest: str) -> set[str]:
    params = GROUP.commands[command].params  # type: ignore[attr-defined]
    return set(next(p for p in params if p.name == dest).opts)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_alias_shows_in_full_at_80_columns(command: str) -> None:
    text = _help(command)
    assert "…" not in text
    for param in GROUP.commands[command].params:  # type: ignore[attr-defined]
        if param.param_type_name == "option":
            for name in param.opts + param.secondary_opts:
                assert name in text, f"{command} --help lacks {name}"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_has_no_raw_markup_or_other_commands_defaults(command: str) -> None:
    text = _help(command, 200)
    assert "``" not in text
    assert "infer's default" not in text


@pytest.mark.parametrize(
    ("commands", "dest", "name", "alias"),
    [
        (("check", "verify"), None, "--images", None),
        (("check", "verify"), None, "--max-rel-error", None),
        (("check",), "image", "--images", "--image"),
        (("eval", "train", "calibrate"), None, "--split", None),
        (("train",), "val_split", "--split", "--val-split"),
        (("calibrate",), "eval_split", "--split", "--eval-split"),
        (("export", "calibrate"), None, "--calib-data", None),
        (("infer",), "imgsz", "--imgsz", "--input-size"),
    ],
)
def test_one_name_per_idea(commands: tuple[str, ...], dest: str | None, name: str, alias: str | None) -> None:
    for command in commands:
        every = {n for p in GROUP.commands[command].params for n in getattr(p, "opts", [])}  # type: ignore[attr-defined]
        assert name in every, f"{command} has no {name}"
        if dest is not None:
            assert {name, alias} <= _names(command, dest)


def test_int8_data_defaults_agree() -> None:
    def default(command: str, dest: str) -> object:
        params = GROUP.commands[command].params  # type: ignore[attr-defined]
        return next(p for p in params if p.name == dest).default

    assert default("calibrate", "data") == "synthetic"
    assert "default: synthetic" in " ".join(_help("export", 200).split())


@pytest.fixture
def dynamic_artifact(tmp_path):
    return write_artifact(tmp_path, semantic_model("height", "width"), shape=(1, 3, "height", "width"))


def test_cuda_graph_on_a_cpu_provider_says_it_has_no_effect(dynamic_artifact, tmp_path) -> None:
    image = tmp_path / "x.png"
    import cv2
    import numpy as np

    cv2.imwrite(str(image), np.zeros((40, 60, 3), np.uint8))
    result = CliRunner().invoke(
        app, ["infer", str(dynamic_artifact), str(image), "--out", str(tmp_path / "o"), "--cuda-graph"]
    )
    assert result.exit_code == 0, result.output
    assert "note: cuda_graph has no effect here (providers: CPUExecutionProvider)" in result.output


def test_infer_imgsz_runs_a_dynamic_export_at_that_size(dynamic_artifact, tmp_path) -> None:
    import cv2
    import numpy as np

    image = tmp_path / "x.png"
    cv2.imwrite(str(image), np.zeros((40, 60, 3), np.uint8))
    out = tmp_path / "o"
    ok = CliRunner().invoke(
        app, ["infer", str(dynamic_artifact), str(image), "--out", str(out), "--imgsz", "64x96"]
    )
    assert ok.exit_code == 0, ok.output
    labels = cv2.imread(str(out / "labels" / "x.png.png"), cv2.IMREAD_UNCHANGED)
    assert labels.shape == (40, 60)
    bad = CliRunner().invoke(
        app, ["infer", str(dynamic_artifact), str(image), "--out", str(tmp_path / "b"), "--imgsz", "60x96"]
    )
    assert bad.exit_code == 2 and re.search(r"input height 60 must be a positive multiple of 32", bad.output)
    assert len(bad.output.strip().splitlines()) == 1 and not (tmp_path / "b").exists()


def test_static_export_refuses_another_size(tmp_path) -> None:
    from runtime import Segmenter
    from runtime.errors import ArtifactError

    path = write_artifact(tmp_path, semantic_model(32, 64))
    with pytest.raises(ArtifactError, match="fixed to 32 in this export, got 64 .*--dynamic"):
        Segmenter.open(path, input_size=(64, 64))
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert (
        Segmenter.open(path, input_size=tuple(sidecar["input"]["shape"][2:])).artifact.input_format.height
        == 32
    )


def test_bench_cuda_graph_on_a_cpu_provider_says_it_has_no_effect(dynamic_artifact) -> None:
    args = ["bench", str(dynamic_artifact), "--shape", "32x64", "--iterations", "1", "--warmup", "0"]
    result = CliRunner().invoke(app, [*args, "--cuda-graph"])
    assert result.exit_code == 0, result.output
    assert "note: cuda_graph has no effect here" in result.output
