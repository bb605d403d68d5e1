"""The parity policy on a corpus of healthy and damaged artifacts of the default model.

Every healthy artifact (FP32 / FP16 / INT8 of both ``--target`` layouts, at 256x512 and 128x256)
must PASS and every damaged one (eight kinds, tests/helpers/compare_corpus.py) must FAIL, under
``verify`` (against the FP32 ONNX of its size) and ``check`` (against PyTorch), on the default
inputs. The margins (how far each verdict is from flipping) are printed by
``test_margins_table`` (``pytest -s``) and summarised in README, "Parity verdicts".
"""

from __future__ import annotations

import pytest

from export.check import check_artifact
from runtime.tools.compare import ComparisonReport
from runtime.tools.verify import verify
from tests.helpers.compare_corpus import build_corpus

pytest.importorskip("onnxruntime")

HEALTHY = [
    f"{k} {s}" for s in ("256x512", "128x256") for k in ("fp32", "fp16", "int8-tensorrt", "int8-onnxruntime")
]
DAMAGED = [
    "weights from another seed (fp16)",
    "last decoder layer dropped (fp16)",
    "one conv scaled by 5% (fp16)",
    "colour order swapped (int8)",
    "wrong mean/std in sidecar (fp16)",
    "class order permuted (fp16)",
    "INT8 scales x4 (int8)",
    "scores output NaN (int8)",
]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    entries, source = build_corpus(tmp_path_factory.mktemp("corpus"))
    assert [e.name for e in entries] == HEALTHY + DAMAGED
    return {e.name: e for e in entries}, source


@pytest.fixture(scope="session")
def verdicts(corpus):
    """name -> (verify report, check report), each computed once."""
    entries, source = corpus
    out: dict[str, tuple[ComparisonReport, ComparisonReport]] = {}
    for name, entry in entries.items():
        checked = check_artifact(
            entry.path, source=source if "128x256" not in name else None, emulate=False, threads=1
        )
        out[name] = (verify(entry.path, against=entry.reference, threads=1), checked.reports[0])
    return out


@pytest.mark.parametrize("name", HEALTHY)
def test_healthy_artifacts_pass(verdicts, name):
    for report in verdicts[name]:
        assert report.passed, report.table()


@pytest.mark.parametrize("name", DAMAGED)
def test_damaged_artifacts_fail(verdicts, name):
    for report in verdicts[name]:
        assert not report.passed, report.table()


def test_nan_output_fails_naming_it(verdicts):
    for report in verdicts["scores output NaN (int8)"]:
        assert report.failures[0].startswith("scores of the candidate holds NaN / Inf"), report.failures


def _relative_margin(report: ComparisonReport) -> tuple[float, str]:
    """The tightest criterion's margin as a fraction of its allowed slack (1 - limit for shares)."""
    best = (float("inf"), "")
    for c in report.criteria:
        slack = (1.0 - c.limit) if c.higher_is_better else c.limit
        value = c.margin / slack if slack > 0 else c.margin
        best = min(best, (value, c.what.split(" (")[0]))
    return best


def test_margins_table(verdicts, capsys):
    """Every verdict right; prints each one's tightest criterion and margin."""
    right = 0
    lines = [f"{'artifact':<36}{'tool':<8}{'verdict':<8}tightest criterion (margin / allowed slack)"]
    for name, reports in verdicts.items():
        for tool, report in zip(("verify", "check"), reports):
            healthy = name in HEALTHY
            right += report.passed == healthy
            margin, what = _relative_margin(report)
            lines.append(f"{name:<36}{tool:<8}{'PASS' if report.passed else 'FAIL':<8}{what} {margin:+.2f}")
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert right == 2 * (len(HEALTHY) + len(DAMAGED))
