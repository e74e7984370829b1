"""The training-data contract, the corruptions it must catch, and the promotion gate."""

from __future__ import annotations

import pytest

from hadrlab.contracts import (
    CORRUPTION_KINDS,
    DataContract,
    corrupt,
    gate,
    validate_training_data,
)
from hadrlab.training import make_training_data


@pytest.fixture(scope="module")
def clean():
    return make_training_data(1500, seed=3)


def rules(result) -> set[tuple[str, str]]:
    return {(v.column, v.rule) for v in result.violations}


def test_clean_training_data_passes(clean):
    result = validate_training_data(clean)
    assert result.passed, result
    assert result.violations == [] and result.rows == 1500 and result.schema_version == "v1"


@pytest.mark.parametrize(
    "kind, expected",
    [
        ("missing", ("log_amount", "null_rate")),
        ("flipped_labels", ("is_fraud", "label_rate")),
        ("schema_change", ("amount_ratio", "required_column")),
        ("out_of_range", ("log_amount", "min_value")),
    ],
)
def test_contract_catches_each_corruption_kind(clean, kind, expected):
    result = validate_training_data(corrupt(clean, kind=kind, fraction=0.2, seed=1))
    assert not result.passed
    assert expected in rules(result), result


def test_schema_change_also_reports_the_unexpected_column(clean):
    result = validate_training_data(corrupt(clean, kind="schema_change"))
    assert ("amount_ratio_pct", "unexpected_column") in rules(result)


def test_violation_names_the_observed_value(clean):
    result = validate_training_data(corrupt(clean, kind="flipped_labels", fraction=0.3, seed=0))
    (violation,) = [v for v in result.violations if v.rule == "label_rate"]
    assert violation.observed > 0.15
    assert "is_fraud" in repr(result) and "label_rate" in result._repr_html_()


def test_light_label_noise_slips_through_the_contract(clean):
    """A contract only catches what it describes: 2% flipped labels keep the rate in bounds."""
    assert validate_training_data(corrupt(clean, kind="flipped_labels", fraction=0.02)).passed


def test_corrupt_leaves_the_original_untouched_and_is_repeatable(clean):
    before = clean.copy()
    a = corrupt(clean, kind="missing", fraction=0.1, seed=7)
    b = corrupt(clean, kind="missing", fraction=0.1, seed=7)
    assert clean.equals(before)
    assert a.equals(b) and not a.equals(clean)


def test_corrupt_rejects_an_unknown_kind(clean):
    with pytest.raises(ValueError, match="Unknown corruption kind"):
        corrupt(clean, kind="typo")
    assert set(CORRUPTION_KINDS) == {"missing", "flipped_labels", "schema_change", "out_of_range"}


def test_too_few_rows_are_refused(clean):
    result = DataContract(min_rows=100).validate(clean.head(50))
    assert ("*", "min_rows") in rules(result)


def test_gate_promotes_the_first_model_above_the_floor():
    decision = gate({"auc": 0.9}, None)
    assert decision.promote and "no production model" in decision.reason


def test_gate_refuses_a_model_below_the_floor():
    decision = gate({"auc": 0.6}, None, min_value=0.7)
    assert not decision.promote and "below the floor" in decision.reason


def test_gate_refuses_a_worse_model_and_promotes_a_better_one():
    assert not gate({"auc": 0.90}, {"auc": 0.95}).promote
    assert gate({"auc": 0.96}, {"auc": 0.95}).promote
    assert gate({"auc": 0.95}, {"auc": 0.95}).promote  # min_improvement 0: equal is enough


def test_gate_honours_min_improvement_and_the_metric_name():
    assert not gate({"auc": 0.955}, {"auc": 0.95}, min_improvement=0.01).promote
    assert gate({"f1": 0.8}, {"f1": 0.7}, metric="f1", min_value=0.5).promote


def test_gate_refuses_a_candidate_without_the_metric():
    decision = gate({"accuracy": 0.99}, {"auc": 0.9})
    assert not decision.promote and "no auc metric" in decision.reason
