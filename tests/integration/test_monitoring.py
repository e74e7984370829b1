"""A real Prometheus and Alertmanager: scrape a real target, record the SLI, fire a burn-rate page,
deliver it to the course's alert receiver, and refuse what cannot work with a clear message."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from hadrlab.errors import MonitoringError, SetupError
from hadrlab.monitoring import check_queries, monitoring_available, start_monitoring
from hadrlab.processes import find_free_port, list_registered, start_process, wait_for_http, wait_until
from hadrlab.sidecar import fetch_alerts, start_alert_receiver

pytestmark = pytest.mark.skipif(bool(monitoring_available()), reason=monitoring_available() or "installed")


class Counters:
    """A /metrics target: a static file server whose file a thread rewrites 4 times a second."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.ok = self.errors = 0
        self.failing = False
        self.rate = 100  # answers per second
        self._stop = threading.Event()
        self._write()
        self.server = start_process("metrics-target", [sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                                        "{port}"], port=find_free_port(), cwd=folder,
                                    ready=lambda c: wait_for_http(c, "/metrics"))
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _write(self) -> None:
        body = ("# TYPE hadrlab_balancer_responses_total counter\n"
                f'hadrlab_balancer_responses_total{{service="model-api",code="200"}} {self.ok}\n'
                f'hadrlab_balancer_responses_total{{service="model-api",code="502"}} {self.errors}\n')
        tmp = self.folder / "metrics.tmp"
        tmp.write_text(body)
        tmp.replace(self.folder / "metrics")

    def _run(self) -> None:
        while not self._stop.wait(0.25):
            if self.failing:
                self.errors += self.rate // 4
            else:
                self.ok += self.rate // 4
            self._write()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join()
        self.server.stop()


def test_a_hard_outage_pages_through_alertmanager_and_the_sli_follows(tmp_path):
    receiver = start_alert_receiver()
    target = Counters(tmp_path)
    try:
        with start_monitoring(receiver_url=receiver.url + "/alerts") as mon:
            assert {e["name"] for e in list_registered()} >= {"prometheus", "alertmanager"}
            # Both servers require the run's password.
            assert httpx.get(mon.url + "/api/v1/targets", timeout=5).status_code == 401
            assert httpx.get(mon.alertmanager_url + "/api/v2/status", timeout=5).status_code == 401
            mon.watch("model-api", [target.server.url])
            assert mon.wait_for_targets() == {f"model-api 127.0.0.1:{target.server.port}": "up"}
            time.sleep(6)
            assert mon.value('service:error_ratio:rate5m{service="model-api"}') == 0

            started = time.time()
            target.failing = True
            waited = mon.wait_for_alert("ErrorBudgetBurnFast", timeout_s=30)
            assert waited < 15, f"the fast-burn page took {waited:.1f} s to fire on a 100% outage"

            def paged():
                return [a for a in fetch_alerts(receiver) if a["alertname"] == "ErrorBudgetBurnFast"
                        and a["status"] == "firing"]
            deadline = time.time() + 20
            while not paged() and time.time() < deadline:
                time.sleep(0.5)
            (page, *_) = paged()
            assert page["receiver"] == "page" and page["labels"]["severity"] == "page", page
            # A 5 min window (4 s here) after 4+ s of nothing but errors reads (nearly) 100%.
            wait_until(lambda: (mon.value('service:error_ratio:rate5m{service="model-api"}') or 0) > 0.9,
                       timeout_s=15, describe="the 5m error ratio to reach 90%")
            frame = mon.query_range('service:error_ratio:rate5m{service="model-api"}', started - 5, time.time())
            assert len(frame) >= 5 and frame.iloc[0, 0] == 0 and frame.iloc[-1, 0] > 0.5
    finally:
        target.stop()
        receiver.stop()
    names = {e["name"] for e in list_registered()}
    assert not names & {"prometheus", "alertmanager"}, names


def test_a_region_down_ticket_silences_the_scoring_apis_slow_burn_ticket_but_never_a_page():
    """Alertmanager's inhibition, on the real server: the cause explains the scoring API's symptom
    ticket; not its page, and not another service's ticket."""
    labels = [
        {"alertname": "RegionDown", "severity": "ticket", "kind": "cause", "region": "a"},
        {"alertname": "ErrorBudgetBurnFast", "severity": "page", "kind": "symptom", "service": "fraud-api"},
        {"alertname": "ErrorBudgetBurnSlow", "severity": "ticket", "kind": "symptom", "service": "fraud-api"},
        {"alertname": "ErrorBudgetBurnSlow", "severity": "ticket", "kind": "symptom", "service": "registry"},
    ]
    with start_monitoring() as mon:
        answer = httpx.post(mon.alertmanager_url + "/api/v2/alerts", json=[{"labels": lab} for lab in labels],
                            auth=(mon.user, mon.password), timeout=5)
        assert answer.status_code == 200, answer.text
        states: dict = {}

        def all_seen() -> bool:
            states.update({(a["labels"]["alertname"], a["labels"].get("service", "")): a["status"]
                           for a in mon.notifications()})
            return len(states) == 4 and all(s["state"] != "unprocessed" for s in states.values())

        wait_until(all_seen, timeout_s=15, describe="Alertmanager to process the four alerts")
    assert states[("ErrorBudgetBurnFast", "fraud-api")]["state"] == "active", states
    assert states[("RegionDown", "")]["state"] == "active", states
    assert states[("ErrorBudgetBurnSlow", "fraud-api")]["state"] == "suppressed", states
    assert states[("ErrorBudgetBurnSlow", "fraud-api")]["inhibitedBy"], states
    assert states[("ErrorBudgetBurnSlow", "registry")]["state"] == "active", states


def test_bad_rules_a_dead_target_and_a_bad_query_are_named(tmp_path):
    with pytest.raises(MonitoringError, match=r"rules\.yml does not load.*promtool check rules"):
        start_monitoring(rules="groups:\n- name: x\n  rules:\n  - record: a\n    expr: sum(\n")
    assert not {e["name"] for e in list_registered()} & {"prometheus", "alertmanager"}
    with start_monitoring() as mon:
        dead = f"http://127.0.0.1:{find_free_port()}"
        mon.watch("ghost", [dead])
        with pytest.raises(MonitoringError, match=r"ghost 127\.0\.0\.1:\d+.*(down|not scraped)"):
            mon.wait_for_targets(timeout_s=4)
        assert "parse error" in mon.check_query("sum(rate(x[5m])")
        assert mon.check_query("sum(rate(x[5m]))") == ""
        with pytest.raises(ValueError, match="base URL"):
            mon.watch("bad", ["not a url"])


def test_a_missing_binary_says_how_to_install_it(monkeypatch):
    monkeypatch.setenv("HADRLAB_PROMETHEUS", "/nonexistent/prometheus")
    with pytest.raises(SetupError, match="HADRLAB_PROMETHEUS=/nonexistent/prometheus is not an executable"):
        start_monitoring()
    monkeypatch.delenv("HADRLAB_PROMETHEUS")
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SetupError, match="apt-get install prometheus prometheus-alertmanager"):
        start_monitoring()


def test_every_dashboard_query_parses():
    """Grafana cannot run here; the Prometheus it would query can parse every panel's PromQL."""
    import json

    folder = Path(__file__).resolve().parents[2] / "infra" / "grafana" / "dashboards"
    queries = [t["expr"] for path in sorted(folder.glob("*.json"))
               for p in json.loads(path.read_text())["panels"] for t in p["targets"]]
    assert len(queries) >= 10
    with start_monitoring() as mon:
        assert check_queries(mon, queries) == {}
        assert check_queries(mon, ["sum(rate(x[5m])"]) != {}
