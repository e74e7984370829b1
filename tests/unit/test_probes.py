"""Probe state machines and the restart back-off, with no processes."""

from __future__ import annotations

from hadrlab.platform.local import ProbeTracker, RestartBackoff
from hadrlab.platform.manifests import ProbeSpec


def _run(tracker: ProbeTracker, results: str) -> list[str | None]:
    return [tracker.record(r == "+") for r in results]


def test_readiness_needs_success_threshold_consecutive_successes():
    tracker = ProbeTracker(ProbeSpec(success_threshold=3, failure_threshold=2), "unknown")
    changes = _run(tracker, "++-+++")
    assert changes == [None, None, None, None, None, "passing"]
    assert tracker.state == "passing"


def test_readiness_drops_after_failure_threshold_consecutive_failures():
    tracker = ProbeTracker(ProbeSpec(success_threshold=1, failure_threshold=3), "unknown")
    assert _run(tracker, "+") == ["passing"]
    # two failures, a success in between resets the count, then three in a row
    assert _run(tracker, "--+---") == [None, None, None, None, None, "failing"]
    assert _run(tracker, "+") == ["passing"]


def test_liveness_starts_passing_and_reports_only_changes():
    tracker = ProbeTracker(ProbeSpec(failure_threshold=2), "passing")
    assert _run(tracker, "+++") == [None, None, None]
    assert _run(tracker, "---") == [None, "failing", None]


def test_backoff_follows_the_kubelet_sequence_capped_at_300_s():
    backoff = RestartBackoff(10.0, 300.0)
    assert [backoff.compute(n) for n in range(1, 10)] == [0, 10, 20, 40, 80, 160, 300, 300, 300]
    assert backoff.reset_after_s == 600


def test_backoff_base_is_configurable_for_fast_labs():
    backoff = RestartBackoff(0.5, 4.0)
    assert [backoff.compute(n) for n in range(1, 7)] == [0, 0.5, 1.0, 2.0, 4.0, 4.0]
