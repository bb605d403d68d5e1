import pytest
from typer.testing import CliRunner

from cli import app
from pem.config import get_preset
from pem.flops import count_cost
from pem.paper import PAPER_ROWS, compare_with_paper


def test_every_paper_row_within_targets():
    rows = compare_with_paper()
    assert [r.row.preset for r in rows] == [r.preset for r in PAPER_ROWS]
    for r in rows:
        assert r.params_error <= 0.01, (r.row.preset, r.params_m)
        assert r.gflops_error <= 0.05, (r.row.preset, r.gflops)


def test_cost_parts_add_up_and_scale_with_resolution():
    cfg = get_preset("cityscapes-semantic-r50")
    full = count_cost(cfg)
    assert sum(full.macs_by_part.values()) == full.macs
    # Components measured independently (shared/design notes): backbone 170.8G, decoder parts 31.3G, 34.0G.
    assert full.macs_by_part["backbone"] / 1e9 == pytest.approx(170.8, rel=0.01)
    assert full.macs_by_part["pixel_decoder"] / 1e9 == pytest.approx(31.3, rel=0.01)
    assert full.macs_by_part["transformer_decoder"] / 1e9 == pytest.approx(34.0, rel=0.01)
    half = count_cost(cfg, (512, 1024))
    assert half.macs < full.macs / 3


def test_info_cli():
    runner = CliRunner()
    result = runner.invoke(app, ["info", "--preset", "cityscapes-semantic-stdc1"])
    assert result.exit_code == 0, result.output
    assert "16.96 M" in result.output and "91.67" in result.output
    result = runner.invoke(app, ["info", "--preset", "cityscapes-semantic-tiny", "--height", "100"])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and "multiple of 32" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["info", "--preset", "nope"])
    assert result.exit_code == 2 and "unknown preset 'nope'" in result.output
    result = runner.invoke(app, ["info", "--checkpoint", "/nonexistent/x.safetensors"])
    assert result.exit_code == 2 and "/nonexistent/x.safetensors" in result.output
    result = runner.invoke(app, ["info", "--paper"])
    assert result.exit_code == 0 and result.output.count(" yes |\n") == len(PAPER_ROWS)
