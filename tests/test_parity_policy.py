"""One parity policy for check, demo and verify (contract/parity_policy.py); needs torch (export)."""

from contract.parity_policy import POLICIES, ParityPolicy, Tolerance, policy_for


def test_check_demo_and_verify_share_one_policy():
    from export import check
    from workflows import demo

    assert {k: p.min_label_agreement for k, p in POLICIES.items()} == check.DEFAULT_MIN_AGREEMENT
    assert not hasattr(demo, "INT8_MIN_AGREEMENT")  # the demo no longer has its own INT8 threshold
    assert POLICIES["int8"].min_label_agreement == 0.95


def test_policy_tolerance_and_overrides():
    fp16 = policy_for("fp16")
    assert fp16.float_failure("scores", 0.03, 1.0) is None  # 0.02 + 0.02 x 1.0 = 0.04
    assert "scores: max abs error 0.05 > 0.04" in fp16.float_failure("scores", 0.05, 1.0)
    assert fp16.float_failure("pred_logits", 10.0, 1.0) is None  # FP16 logits are not held
    strict = fp16.with_overrides(atol=0.0, rtol=0.0, min_label_agreement=1.0)
    assert strict.tolerances["pred_logits"] == Tolerance(0.0, 0.0) and strict.min_label_agreement == 1.0
    assert isinstance(strict, ParityPolicy) and POLICIES["fp16"].min_label_agreement == 0.99
    assert policy_for("bf16") == POLICIES["fp16"]
