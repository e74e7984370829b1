"""The SLI recording rules and the burn-rate alerts: generated, loadable, and right on synthetic series.

`promtool test rules` evaluates the generated rules on series written here, as Prometheus would
evaluate them every second, and compares the alerts at chosen moments.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from hadrlab.alert_rules import BURN_WINDOWS, SLIS, default_time_scale, render_rules, window
from hadrlab.errors import SetupError
from hadrlab.monitoring import find_monitoring_binary

ROOT = Path(__file__).resolve().parents[2]
PRODUCTION = ROOT / "infra" / "prometheus" / "rules" / "slo.yml"


def _promtool() -> str:
    try:
        return find_monitoring_binary("promtool")
    except SetupError as exc:
        pytest.skip(f"promtool is not installed: {exc}")


def test_windows_are_the_workbooks_divided_by_one_scale():
    assert [(s, lo, sh, b) for s, lo, sh, b in BURN_WINDOWS][:2] == [("page", 3600, 300, 14.4), ("page", 21600, 1800, 6.0)]
    assert default_time_scale(1.0) == 75  # the 5 min window holds 4 one-second scrapes
    assert window(3600, 75) == "48s" and window(300, 75) == "4s" and window(3600, 1) == "3600s"
    text = render_rules(time_scale=75)
    assert "1h -> 48s" in text and "5m -> 4s" in text
    with pytest.raises(ValueError, match="time_scale"):
        render_rules(time_scale=0.5)
    with pytest.raises(ValueError, match="slo"):
        render_rules(slo=99.9)


def test_every_sli_has_a_page_and_a_ticket_alert_with_both_window_pairs():
    groups = {g["name"]: g["rules"] for g in yaml.safe_load(render_rules(time_scale=75))["groups"]}
    alerts = {(r["alert"], r["labels"]["service"]): r for r in groups["slo-burn"]}
    for sli in SLIS:
        page = alerts[("ErrorBudgetBurnFast", sli.service)]
        assert page["labels"]["severity"] == "page" and page["labels"]["kind"] == "symptom"
        assert "> 14.4 * 0.001" in page["expr"] and "> 6 * 0.001" in page["expr"] and " or" in page["expr"]
        assert alerts[("ErrorBudgetBurnSlow", sli.service)]["labels"]["severity"] == "ticket"
    assert {r["alert"] for r in groups["causes"]} == {"RegionDown"}
    assert all(r["labels"]["severity"] == "ticket" for r in groups["causes"])


def test_the_production_rule_file_is_the_generated_one():
    assert PRODUCTION.read_text() == render_rules(time_scale=1), (
        f"{PRODUCTION} is out of date: regenerate it with "
        f"`python -c 'from hadrlab.alert_rules import render_rules; print(render_rules(), end=\"\")' > {PRODUCTION}`")


@pytest.mark.parametrize("scale", [1, 75])
def test_promtool_accepts_the_rules(tmp_path, scale):
    path = tmp_path / "rules.yml"
    path.write_text(render_rules(time_scale=scale))
    done = subprocess.run([_promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr


def _labels(severity, service="model-api"):
    return {"severity": severity, "kind": "symptom", "service": service}


def _annotations(severity, service="model-api"):
    return {"summary": f"{service} is spending its error budget (0.999 SLO) too fast",
            "description": f"Both windows of a {severity} pair are above their burn rate; see "
                           f"service:error_ratio:* for service {service}."}


def test_alerts_on_synthetic_series(tmp_path):
    """At lab scale 75: a hard outage pages within seconds; a 2 s blip inside a busy minute does not;
    a region down is a ticket, after its `for`."""
    (tmp_path / "rules.yml").write_text(render_rules(time_scale=75))
    ok, err = 'hadrlab_balancer_responses_total{service="model-api",code="200"}', \
        'hadrlab_balancer_responses_total{service="model-api",code="502"}'
    tests = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1s",
        "tests": [
            {   # 100 answers/s, all good for 60 s, then every answer an error.
                "interval": "1s",
                "input_series": [{"series": ok, "values": "0+100x60 6000x60"},
                                 {"series": err, "values": "0x60 0+100x60"}],
                "alert_rule_test": [
                    {"eval_time": "59s", "alertname": "ErrorBudgetBurnFast", "exp_alerts": []},
                    {"eval_time": "64s", "alertname": "ErrorBudgetBurnFast",
                     "exp_alerts": [{"exp_labels": _labels("page"), "exp_annotations": _annotations("page")}]},
                ],
                "promql_expr_test": [
                    {"expr": 'service:error_ratio:rate5m{service="model-api"}', "eval_time": "30s",
                     "exp_samples": [{"labels": 'service:error_ratio:rate5m{service="model-api"}', "value": 0}]},
                ],
            },
            {   # 100 answers/s; for 2 s, 10 of them fail: a failover the sidecar heals at once.
                "interval": "1s",
                "input_series": [{"series": ok, "values": "0+100x60 6000+90x2 6180+100x57"},
                                 {"series": err, "values": "0x60 0+10x2 20x57"}],
                "alert_rule_test": [
                    {"eval_time": "63s", "alertname": "ErrorBudgetBurnFast", "exp_alerts": []},
                    {"eval_time": "90s", "alertname": "ErrorBudgetBurnFast", "exp_alerts": []},
                ],
            },
            {   # 100 answers/s of POST /score: 99 within 0.1 s, 1 between 0.1 and 0.5 s.
                "interval": "1s",
                "input_series": [
                    {"series": 'fraud_api_score_latency_seconds_bucket{le="0.1"}', "values": "0+99x30"},
                    {"series": 'fraud_api_score_latency_seconds_bucket{le="0.5"}', "values": "0+100x30"},
                    {"series": 'fraud_api_score_latency_seconds_bucket{le="+Inf"}', "values": "0+100x30"}],
                "promql_expr_test": [
                    {"expr": 'service:latency_seconds:p99_rate5m{service="fraud-api"}', "eval_time": "20s",
                     "exp_samples": [{"labels": 'service:latency_seconds:p99_rate5m{service="fraud-api"}',
                                      "value": 0.1}]},
                ],
            },
            {   # The sidecar marks region a down at 10 s.
                "interval": "1s",
                "input_series": [{"series": 'sidecar_region_up{region="a"}', "values": "1x10 0x30"},
                                 {"series": 'sidecar_region_up{region="b"}', "values": "1x40"}],
                "alert_rule_test": [
                    {"eval_time": "9s", "alertname": "RegionDown", "exp_alerts": []},
                    {"eval_time": "20s", "alertname": "RegionDown", "exp_alerts": [{
                        "exp_labels": {"severity": "ticket", "kind": "cause", "region": "a"},
                        "exp_annotations": {"summary": "The sidecar counts region a as down; reads moved away."}}]},
                ],
            },
        ],
    }
    (tmp_path / "tests.yml").write_text(yaml.safe_dump(tests, sort_keys=False))
    done = subprocess.run([_promtool(), "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
