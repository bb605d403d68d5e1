"""What the commands decide lives in the packages' APIs (issue 26): the same checks without the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

from contract.errors import PemDeployError, UsageError
from runtime.io.infer_job import RaySettings, StreamSettings, run_infer
from runtime.tools.compare import POLICIES, PolicyOverrides, policy_for, policy_from_overrides
from runtime.tools.engine_build import engine_file_name
from workflows.bench import BenchSettings, bench_models


def _never() -> str:
    raise AssertionError("the candidate's precision is read only without --policy")


def test_policy_from_overrides_keeps_the_candidates_policy_when_nothing_is_given() -> None:
    assert policy_from_overrides(PolicyOverrides(), _never) is None
    assert policy_from_overrides(PolicyOverrides(), lambda: "int8") is None


def test_policy_from_overrides_starts_from_the_named_or_the_candidates_policy() -> None:
    named = policy_from_overrides(PolicyOverrides(precision="fp32", min_miou=0.5), _never)
    assert named is not None and named.precision == "fp32" and named.min_miou == 0.5
    assert named.min_confident_agreement == POLICIES["fp32"].min_confident_agreement
    own = policy_from_overrides(PolicyOverrides(max_relative_error=0.3), lambda: "int8")
    assert own is not None and own.precision == "int8"
    assert set(own.max_relative_error.values()) == {0.3}
    assert own.min_segment_match == policy_for("int8").min_segment_match


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (PolicyOverrides(precision="bf16"), "--policy bf16: choose fp32, fp16, int8"),
        (PolicyOverrides(min_miou=1.5), "min mIoU 1.5: must be between 0 and 1"),
    ],
)
def test_policy_from_overrides_refuses_in_one_line(overrides: PolicyOverrides, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        policy_from_overrides(overrides, lambda: "fp16")
    assert str(caught.value) == message


def test_the_policy_table_keeps_one_relative_error_per_precision() -> None:
    for precision, policy in POLICIES.items():
        assert policy.precision == precision
        assert set(policy.max_relative_error) == {"pred_logits", "pred_masks", "scores"}
        assert len(set(policy.max_relative_error.values())) == 1


def test_engine_file_name_is_stem_and_precision() -> None:
    assert engine_file_name("model", "fp16") == "model.fp16.engine"


@pytest.mark.parametrize(
    ("sources", "ray", "stream", "message"),
    [
        (["a.png"], RaySettings(workers=2), StreamSettings(), "--workers: only with --ray"),
        (
            ["a.png"],
            RaySettings(batch=4, keep_uncertain=0.1),
            StreamSettings(),
            "--batch, --keep-uncertain: only with --ray",
        ),
        (
            ["a.png", "b.png"],
            RaySettings(),
            StreamSettings(),
            "2 inputs given; one at a time, or several with --ray",
        ),
        (
            ["bag"],
            RaySettings(),
            StreamSettings(topics=("/cam",), save_video=True),
            "--save-video is for a whole video",
        ),
        (["a", "b"], RaySettings(address="./frames"), StreamSettings(), "--ray ./frames: not a Ray address"),
    ],
)
def test_run_infer_refuses_options_that_do_not_fit_the_route(
    tmp_path: Path, sources: list[str], ray: RaySettings, stream: StreamSettings, message: str
) -> None:
    """Refused before the model is opened (the artifact does not exist) and before anything is written."""
    out = tmp_path / "out"
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        run_infer(str(tmp_path / "none.onnx"), sources, str(out), stream=stream, ray=ray)
    assert not out.exists()


def test_bench_models_needs_something_to_time(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="give one or more artifacts"):
        bench_models([], [], BenchSettings())
    with pytest.raises(PemDeployError, match="no such file or folder"):
        bench_models([str(tmp_path / "none.onnx")], [], BenchSettings())
