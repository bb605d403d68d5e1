"""Artifacts (ONNX + sidecar), atomic writes, errors, and the export / check CLI commands."""

import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
from typer.testing import CliRunner

import export.pipeline as pipeline
from cli import app
from contract.errors import SidecarError
from contract.fs import sha256_file
from contract.output import MANIFEST_NAME
from export.check import check_artifact
from export.errors import ExportError
from export.heads import ExportedModel
from export.metadata import read_metadata
from export.parity import open_session, run_reference
from export.pipeline import ExportOptions, export_artifact
from export.source import load_source
from pem.checkpoint import save_checkpoint
from tests.helpers.export_models import tiny_graph, tiny_source

pytest.importorskip("onnxruntime")

SMALL = ["--height", "64", "--width", "128"]


def _reuse_cached_raw_graph(monkeypatch):
    """Skip the (slow, separately tested) torch export: hand the pipeline the cached raw graph."""

    cached = tiny_graph("raw")[0]  # before patching: the cache may still have to export it

    def raw_part(source, options):
        model = onnx.ModelProto()
        model.CopyFrom(cached)
        return model, {"deform_impl": "native"}

    monkeypatch.setattr(pipeline, "_raw_part", raw_part)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory):
    """One FP16 semantic export through the CLI, shared by the tests below."""
    out = tmp_path_factory.mktemp("artifact") / "tiny"
    result = CliRunner().invoke(
        app,
        ["export", "--preset", "cityscapes-semantic-tiny", *SMALL, "--precision", "fp16", "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    return out, result.output


def test_cli_export_writes_a_complete_artifact(artifact):
    out, output = artifact
    # no temp leftovers; the hidden record of what pem-deploy wrote
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "model.json", "model.onnx"]
    assert "model.onnx" in output and "TensorRT 10" in output
    sidecar = json.loads((out / "model.json").read_text())
    assert sidecar["format"] == "pem-deploy" and sidecar["format_version"] == 1
    assert sidecar["sha256"] == sha256_file(out / "model.onnx")
    assert sidecar["head"] == "semantic" and sidecar["precision"] == "fp16" and sidecar["task"] == "semantic"
    inp = sidecar["input"]
    assert inp["name"] == "images" and inp["shape"] == [1, 3, 64, 128] and inp["dtype"] == "float32"
    assert inp["layout"] == "NCHW" and inp["color"] == "RGB" and inp["normalize_in_graph"] is False
    assert inp["normalization"]["mean"] == [123.675, 116.28, 103.53]
    assert sidecar["outputs"] == [
        {
            "name": "labels",
            "dtype": "int32",
            "shape": [1, 64, 128],
            "shape_symbols": ["B", "H", "W"],
            "meaning": sidecar["outputs"][0]["meaning"],
        }
    ]
    assert len(sidecar["classes"]) == 19
    assert sidecar["classes"][0] == {"id": 0, "name": "road", "color": [128, 64, 128], "isthing": False}
    assert sidecar["panoptic"]["object_mask_threshold"] == 0.8
    assert sidecar["onnx"]["opset"] == 19 and sidecar["onnx"]["op_counts"]["DeformConv"] == 3
    assert {"torch", "onnx", "onnxruntime", "onnxscript", "python"} <= set(sidecar["tools"])
    assert (
        sidecar["source"]["preset"] == "cityscapes-semantic-tiny" and sidecar["source"]["weights"] == "random"
    )
    assert sidecar["fp16"]["fp32_nodes"]["prototype similarity"] > 0
    assert sidecar["tensorrt_lint"]["10"]["rejected"] == []
    model = onnx.load(str(out / "model.onnx"))
    embedded = read_metadata(model)
    assert embedded == {
        k: v for k, v in sidecar.items() if k not in ("sha256", "created_utc", "tensorrt_lint", "size_bytes")
    }
    props = {p.key: p.value for p in model.metadata_props}
    assert props["pem.precision"] == "fp16" and json.loads(props["pem.classes"])[11]["name"] == "person"
    assert model.ir_version <= 10
    open_session(out / "model.onnx")


def test_runtime_reads_the_sidecar(artifact):
    """Contract test: the torch-free runtime (if present) accepts what export writes."""
    runtime_artifact = pytest.importorskip("runtime.core.artifact")
    loaded = runtime_artifact.load_artifact(artifact[0] / "model.onnx")
    assert loaded.head == "semantic" and loaded.num_classes == 19 and loaded.precision == "fp16"
    assert loaded.input_format.height == 64 and loaded.input_format.width == 128
    assert loaded.output_names == ("labels",)


def test_cli_check_passes_and_reports(artifact):
    result = CliRunner().invoke(app, ["check", str(artifact[0]), "--random", "1", "--scenes", "1"])
    assert result.exit_code == 0, result.output
    assert "FP16-emulated" in result.output and "label agreement" in result.output and "PASS" in result.output


def test_check_refuses_a_modified_file(artifact, tmp_path):
    out = tmp_path / "copy"
    out.mkdir()
    for name in ("model.onnx", "model.json"):
        (out / name).write_bytes((artifact[0] / name).read_bytes())
    with (out / "model.onnx").open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ExportError, match="checksum does not match"):
        check_artifact(out)


def test_checkpoint_export_and_check(tmp_path):
    source = load_source(preset="cityscapes-panoptic-tiny", seed=3)
    ckpt = save_checkpoint(source.model, source.config, tmp_path / "tiny.safetensors")
    out = tmp_path / "raw"
    result = export_artifact(
        load_source(checkpoint=ckpt, height=64, width=64), ExportOptions(out_dir=out, head="raw", name="pem")
    )
    assert result.onnx_path == out / "pem.onnx" and result.sidecar_path == out / "pem.json"
    assert result.spec.to_dict()["source"]["checkpoint_sha256"] == sha256_file(ckpt)
    assert result.spec.to_dict()["task"] == "panoptic"
    assert [c["id"] for c in result.spec.to_dict()["classes"] if c["isthing"]] == list(range(11, 19))
    check = check_artifact(out / "pem.onnx", scenes=1)
    assert check.passed, check.failures
    assert check.reports[0].worst("pred_logits").max_abs < 1e-4


def test_check_finds_the_recorded_checkpoint_from_any_folder(tmp_path, monkeypatch):
    """The sidecar records the checkpoint relative to itself and absolute; ``check`` run from
    another folder, and after the project folder moved, still finds it; a missing one is named
    with the sidecar field it came from (not a --checkpoint the user never passed)."""
    project = tmp_path / "project"
    source = load_source(preset="cityscapes-panoptic-tiny", seed=3)
    save_checkpoint(source.model, source.config, project / "runs" / "tiny.safetensors")
    monkeypatch.chdir(project)
    export_artifact(
        load_source(checkpoint="runs/tiny.safetensors", height=64, width=64),
        ExportOptions(out_dir="art", head="raw"),
    )
    recorded = json.loads((project / "art" / "model.json").read_text())["source"]
    assert recorded["checkpoint"] == "runs/tiny.safetensors"
    assert recorded["checkpoint_relative"] == "../runs/tiny.safetensors"
    assert recorded["checkpoint_absolute"] == str(project / "runs" / "tiny.safetensors")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert check_artifact(project / "art", scenes=1).passed
    moved = tmp_path / "moved"
    project.rename(moved)  # absolute and as-given paths are stale now; the relative one holds
    assert check_artifact(moved / "art", scenes=1).passed
    (moved / "runs" / "tiny.safetensors").unlink()
    result = CliRunner().invoke(app, ["check", str(moved / "art"), "--scenes", "1"])
    assert result.exit_code == 2
    message = result.output.strip()
    assert message.startswith(f"error: {moved / 'art' / 'model.json'}: the checkpoint this artifact")
    assert "source.checkpoint_relative -> " in message and "--checkpoint FILE" in message
    assert "\n" not in message


def test_failed_export_leaves_out_dir_unchanged(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("untouched")
    (out / "model.onnx").write_bytes(b"old")

    def boom(*args, **kwargs):
        raise ExportError("simulated failure in the middle of the export")

    _reuse_cached_raw_graph(monkeypatch)
    monkeypatch.setattr(pipeline, "lint_model", boom)
    source = tiny_source()
    with pytest.raises(ExportError, match="simulated"):
        export_artifact(source, ExportOptions(out_dir=out, head="raw", exist_ok=True, overwrite=True))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "model.onnx"]
    assert (out / "model.onnx").read_bytes() == b"old"
    monkeypatch.setattr(pipeline, "_raw_part", boom)
    with pytest.raises(ExportError, match="simulated"):
        export_artifact(source, ExportOptions(out_dir=tmp_path / "never" / "created"))
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"head": "instance"}, "--head instance: choose one of raw, semantic, panoptic"),
        ({"precision": "bf16"}, "--precision bf16"),
        ({"deform_impl": "cuda"}, "--deform-impl cuda"),
        ({"preprocess": "bgr"}, "--preprocess bgr"),
        ({"simplifier": "magic"}, "--simplifier magic"),
        ({"exporter": "fx"}, "--exporter fx"),
        ({"opset": 17}, "--opset 17"),
        ({"batch": 0}, "--batch 0"),
        ({"name": "../x"}, "--name"),
        ({"dynamic": True, "exporter": "torchscript"}, "--dynamic needs --exporter dynamo"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    with pytest.raises(ExportError, match=message.replace("(", r"\(")) as info:
        ExportOptions(**options).validate()
    assert "\n" not in str(info.value)


def test_bad_sources_are_one_line_errors(tmp_path):
    cases = [
        ({"preset": "cityscapes-semantic-r18"}, "unknown preset"),
        ({"checkpoint": tmp_path / "missing.safetensors"}, "no such file"),
        (
            {"preset": "cityscapes-semantic-tiny", "height": 100},
            "--height 100: must be a positive multiple of 32",
        ),
        ({"preset": "cityscapes-semantic-tiny", "width": -32}, "--width -32"),
        ({}, "give --preset NAME or --checkpoint FILE"),
    ]
    (tmp_path / "official.pkl").write_bytes(b"not a pickle")
    (tmp_path / "weights.bin").write_bytes(b"")
    cases += [
        ({"checkpoint": tmp_path / "official.pkl"}, "needs --preset"),
        ({"checkpoint": tmp_path / "official.pkl", "preset": "cityscapes-semantic-tiny"}, "official.pkl"),
        ({"checkpoint": tmp_path / "weights.bin"}, "unknown checkpoint type"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ExportError, match=message) as info:
            load_source(**kwargs)
        assert "\n" not in str(info.value)


def test_int8_needs_calibration(tmp_path):
    source = load_source(preset="cityscapes-semantic-tiny", height=64, width=64)
    with pytest.raises(ExportError, match="INT8 needs calibration"):
        export_artifact(source, ExportOptions(out_dir=tmp_path / "int8", precision="int8"))
    assert not (tmp_path / "int8").exists()


def test_int8_quantizer_plugs_in(tmp_path, monkeypatch):
    """The calibration package supplies a quantizer; export calls it on the FP32 model graph."""
    seen = {}

    def fake_quantizer(model, context):
        seen["outputs"] = [o.name for o in model.graph.output]
        seen["head"] = context.head
        return model

    _reuse_cached_raw_graph(monkeypatch)
    result = export_artifact(
        tiny_source(),
        ExportOptions(out_dir=tmp_path / "q", precision="int8", head="raw"),
        int8_quantizer=fake_quantizer,
    )
    assert seen == {"outputs": ["pred_logits", "pred_masks"], "head": "raw"}
    assert result.spec.to_dict()["precision"] == "int8"


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path):
    runner = CliRunner()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    cases = [
        (["export", "--preset", "nope", "--out", str(tmp_path / "o")], "unknown preset"),
        (
            [
                "export",
                "--preset",
                "cityscapes-semantic-tiny",
                "--height",
                "70",
                "--out",
                str(tmp_path / "o"),
            ],
            "--height 70",
        ),
        (
            ["export", "--checkpoint", str(tmp_path / "x.safetensors"), "--out", str(tmp_path / "o")],
            "no such file",
        ),
        (
            ["export", "--preset", "cityscapes-semantic-tiny", "--out", str(a_file)],
            "exists and is not a folder",
        ),
        (
            ["export", "--preset", "cityscapes-semantic-tiny", "--head", "x", "--out", str(tmp_path / "o")],
            "--head x",
        ),
        (["check", str(tmp_path / "none.onnx")], "no such ONNX file"),
        (["check", str(tmp_path)], "expected exactly one .onnx"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_dynamic_batch_and_size_with_uint8_input(tmp_path):
    source = tiny_source()  # panoptic tiny, 64x128, every query kept (object_mask_threshold 0)
    result = export_artifact(
        source, ExportOptions(out_dir=tmp_path, head="panoptic", dynamic=True, preprocess="uint8")
    )
    sc = result.spec.to_dict()
    assert sc["input"]["shape"] == ["batch", 3, "height", "width"] and sc["input"]["dtype"] == "uint8"
    assert sc["input"]["normalize_in_graph"] is True and sc["input"]["default_size"] == [64, 128]
    shapes = {o["name"]: o["shape"] for o in sc["outputs"]}
    assert shapes == {
        "scores": ["batch", 20],
        "classes": ["batch", 20],
        "owner": ["batch", "height", "width"],
        "owner_fg": ["batch", "height", "width"],
        "mask_area": ["batch", 20],
    }
    model = onnx.load(str(result.onnx_path))
    (inp,) = model.graph.input
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim] == [
        "batch",
        3,
        "height",
        "width",
    ]
    session = open_session(result.onnx_path)
    reference = ExportedModel(source.model, "panoptic", "uint8").eval()
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(0)
    for shape in [(1, 3, 32, 96), (3, 3, 96, 64)]:
        x = rng.integers(0, 256, shape, dtype=np.uint8)
        got = dict(zip(names, session.run(None, {"images": x})))
        ref = run_reference(reference, x, names)
        assert [got[n].shape for n in names] == [tuple(shape[:1]) + s for s in ((20,), (20,))] + [
            (shape[0], shape[2], shape[3])
        ] * 2 + [(shape[0], 20)]
        assert [got[n].dtype for n in names] == [np.float32, np.int32, np.int32, np.uint8, np.int32]
        np.testing.assert_allclose(got["scores"], ref["scores"], atol=1e-6)
        np.testing.assert_array_equal(got["classes"], ref["classes"])
        assert (got["owner"] == ref["owner"]).mean() >= 0.999
        assert (got["owner_fg"] == ref["owner_fg"]).mean() >= 0.999
    assert Path(result.sidecar_path).is_file()


def test_check_refuses_a_malformed_sidecar(artifact, tmp_path):
    for name in ("model.onnx", "model.json"):
        (tmp_path / name).write_bytes((artifact[0] / name).read_bytes())
    sidecar = json.loads((tmp_path / "model.json").read_text())
    del sidecar["input"]["shape"]
    (tmp_path / "model.json").write_text(json.dumps(sidecar))
    with pytest.raises(SidecarError, match=r"model\.json: input\.shape is missing"):
        check_artifact(tmp_path)
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(SidecarError, match="model.json: format is missing: not a pem-deploy sidecar"):
        check_artifact(tmp_path / "model.onnx")


def test_missing_onnxsim_is_a_clear_error():
    import importlib.util

    from export.simplify import simplify

    if importlib.util.find_spec("onnxsim") is not None:
        pytest.skip("onnxsim is installed")
    with pytest.raises(ExportError, match="onnxsim is not installed"):
        simplify(tiny_graph("raw")[0], "onnxsim")


def test_console_progress_shows_steps_on_a_terminal():
    import io

    from export.progress import ConsoleProgress

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Tty()
    with ConsoleProgress(stream) as progress:
        progress("exporting")
        progress("simplifying")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())
    assert "done exporting" in text and "done simplifying" in text
    quiet = io.StringIO()
    with ConsoleProgress(quiet, enabled=False) as progress:
        progress("exporting")
    assert quiet.getvalue() == ""


def test_console_progress_prints_lines_off_a_terminal(monkeypatch):
    """CI logs, nohup, pipes: a step that runs for long prints a line every EVERY_S seconds."""
    import io
    import time

    from export.progress import ConsoleProgress

    monkeypatch.setattr("contract.progress.EVERY_S", 0.05)
    log = io.StringIO()
    with ConsoleProgress(log) as progress:
        progress("quick step")  # ends before the first line is due: silent
        progress("exporting to ONNX")
        time.sleep(0.3)
    lines = log.getvalue().splitlines()
    assert len(lines) >= 2 and all(re.fullmatch(r"exporting to ONNX: \d+ s", line) for line in lines), lines
    time.sleep(0.15)
    assert log.getvalue().splitlines() == lines  # nothing after the step closed
