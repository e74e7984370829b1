"""Reliability arithmetic with known answers, and the calculators' pure functions."""

from __future__ import annotations

import math

import pytest

from hadrlab.calculators import build_path, downtime_table, parse_slo, plot_path
from hadrlab.reliability import (
    WINDOWS_S,
    Component,
    ServingPath,
    availability_from_mtbf,
    burn_rate,
    downtime_budget,
    error_budget,
    nines,
    parallel,
    replicas_needed,
    series,
    time_to_exhaust,
)


def test_windows_have_the_documented_lengths():
    assert WINDOWS_S["month"] == 30 * 86400
    assert WINDOWS_S["quarter"] == 91 * 86400
    assert WINDOWS_S["year"] == 365 * 86400


def test_monthly_downtime_budget_of_99_95_percent_is_21_6_minutes():
    assert downtime_budget(0.9995, "month") / 60 == pytest.approx(21.6)


def test_yearly_downtime_budget_of_99_9_percent_is_8_76_hours():
    assert downtime_budget(0.999, "year") / 3600 == pytest.approx(8.76)


@pytest.mark.parametrize(
    ("slo", "window", "seconds"),
    [(0.99, "day", 864.0), (0.999, "week", 604.8), (0.9999, "quarter", 786.24), (0.9999, 3600, 0.36)],
)
def test_downtime_budget_per_window(slo, window, seconds):
    assert downtime_budget(slo, window) == pytest.approx(seconds)


def test_an_unknown_window_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="month"):
        downtime_budget(0.999, "fortnight")


@pytest.mark.parametrize("bad", [99.95, 99.9, 95])
def test_a_percent_instead_of_a_fraction_is_refused_with_the_fraction_suggested(bad):
    with pytest.raises(ValueError, match=f"did you mean {bad / 100:g}"):
        downtime_budget(bad, "month")


@pytest.mark.parametrize("bad", [0, 1, -0.5, float("nan")])
def test_an_slo_outside_zero_one_is_refused(bad):
    with pytest.raises(ValueError, match="slo"):
        downtime_budget(bad)


def test_nines():
    assert nines(0.999) == pytest.approx(3.0)
    assert nines(0.9995) == pytest.approx(3.301, abs=1e-3)
    assert nines(1.0) == math.inf


def test_error_budget_counts_allowed_failures():
    assert error_budget(0.999, 1_000_000) == pytest.approx(1000)


def test_burn_rate_of_one_spends_exactly_the_budget():
    assert burn_rate(0.001, 0.999) == pytest.approx(1.0)
    assert burn_rate(0.0144, 0.999) == pytest.approx(14.4)
    assert time_to_exhaust(14.4, "month") / 86400 == pytest.approx(30 / 14.4)
    assert time_to_exhaust(0, "month") == math.inf


def test_availability_from_mtbf_and_mttr():
    assert availability_from_mtbf(999, 1) == pytest.approx(0.999)
    with pytest.raises(ValueError, match="mtbf_h"):
        availability_from_mtbf(0, 1)


def test_parts_in_series_multiply_and_fall_below_the_weakest():
    assert series(0.99, 0.99) == pytest.approx(0.9801)
    assert series([0.999, 0.9999]) < 0.999


def test_parallel_replicas_fail_only_together():
    assert parallel(0.99, n=2) == pytest.approx(0.9999)
    assert parallel(0.99, 2) == pytest.approx(0.9999)  # positional count
    assert parallel(0.9, 0.8) == pytest.approx(0.98)
    assert parallel(0.995, n=1) == pytest.approx(0.995)
    with pytest.raises(ValueError, match="n must be"):
        parallel(0.99, n=0)


def test_replicas_needed_for_a_target():
    assert replicas_needed(0.99, 0.9999) == 2
    assert replicas_needed(0.95, 0.9999) == 4
    assert replicas_needed(0.9999, 0.999) == 1


def test_serving_path_composes_series_of_replicated_parts():
    path = ServingPath(
        [
            Component("load balancer", 0.9999),
            Component("model replica", 0.995, replicas=3),
            Component("feature store", 0.999),
        ]
    )
    expected = 0.9999 * (1 - 0.005**3) * 0.999
    assert path.availability == pytest.approx(expected)
    assert path.weakest().name == "feature store"
    text = repr(path)
    assert "whole path" in text and "feature store" in text and "99.89%" in text
    assert "<table>" in path._repr_html_()
    path.remove("feature store")
    assert path.availability == pytest.approx(0.9999 * (1 - 0.005**3))
    with pytest.raises(ValueError, match="No part named"):
        path.remove("dns")


def test_component_refuses_a_percent():
    with pytest.raises(ValueError, match="did you mean 0.995"):
        Component("model replica", 99.5)


def test_parse_slo_accepts_percent_and_fraction():
    assert parse_slo("99.95") == pytest.approx(0.9995)
    assert parse_slo("99.95 %") == pytest.approx(0.9995)
    assert parse_slo("0.999") == pytest.approx(0.999)
    for bad in ("abc", "100", "0", "150%"):
        with pytest.raises(ValueError):
            parse_slo(bad)


def test_downtime_table_has_every_window():
    table = downtime_table(0.9995)
    assert list(table.index) == ["day", "week", "month", "quarter", "year"]
    assert table.loc["month", "downtime_s"] == pytest.approx(1296.0)
    assert table.loc["month", "downtime"] == "21.6 min"


def test_build_path_with_a_feature_store_replica_removes_its_downtime():
    single = build_path(feature_store_replica=False)
    double = build_path(feature_store_replica=True)
    assert double.availability > single.availability
    assert build_path(feature_store=False, load_balancer=False, model_replicas=1).availability == pytest.approx(0.995)


def test_plot_path_returns_a_labelled_figure():
    fig = plot_path(build_path())
    ax = fig.axes[0]
    assert "minutes" in ax.get_xlabel()
    assert "nines" in ax.get_title()


def test_downtime_calculator_follows_a_typed_slo():
    from hadrlab.calculators import downtime_calculator

    box = downtime_calculator()
    typed, result = box.children[0].children[1], box.children[1]
    assert "21.6 min" in result.value  # the default pick, 99.95%
    typed.value = "99.99%"
    assert "4.32 min" in result.value
    typed.value = "abc"
    assert "not a number" in result.value


def test_path_calculator_updates_the_composed_availability():
    from hadrlab.calculators import path_calculator

    box = path_calculator()
    controls, summary = box.children[0], box.children[1]
    assert "99.89%" in summary.value and "feature store" in summary.value
    feature_store_replica = controls.children[2].children[2]
    feature_store_replica.value = True
    assert "99.99%" in summary.value and "load balancer" in summary.value
