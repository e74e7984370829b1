"""The proxy's delay scheduler, token bucket and settings, and the Injector, without processes."""

from __future__ import annotations

import random
import time

import pytest

from hadrlab.faults import (
    DelayScheduler,
    FaultSettings,
    Injector,
    TokenBucket,
    describe_faults,
)

# --------------------------------------------------------------------------- delay scheduler


def test_constant_latency_releases_each_chunk_exactly_that_much_later():
    sched = DelayScheduler(random.Random(0))
    for now in (0.0, 0.5, 0.51, 2.0):
        assert sched.release_at(now, latency_ms=100) == pytest.approx(now + 0.1)


def test_jitter_varies_the_delay_but_release_times_never_decrease():
    rng = random.Random(7)
    sched = DelayScheduler(rng)
    reads = [i * 0.001 for i in range(2000)]  # a chunk every millisecond
    releases = [sched.release_at(now, latency_ms=50, jitter_ms=40) for now in reads]
    assert all(b >= a for a, b in zip(releases, releases[1:]))
    delays = [r - n for r, n in zip(releases, reads)]
    assert min(delays) >= 0.010 - 1e-9  # never earlier than latency - jitter
    assert max(delays) <= 0.090 + 1e-9  # waiting for a predecessor never exceeds its max delay
    assert max(delays) - min(delays) > 0.04  # the jitter is real


def test_without_the_monotone_rule_jitter_would_reorder_the_stream():
    """Raw per-chunk delays overtake each other; the scheduler's release order is the read order."""
    raw = DelayScheduler(random.Random(3))
    reads = [i * 0.001 for i in range(500)]
    naive = [n + raw.delay_s(50, 40) for n in reads]
    assert any(b < a for a, b in zip(naive, naive[1:]))  # reordering would happen

    sched = DelayScheduler(random.Random(3))
    released = [(sched.release_at(n, 50, 40), i) for i, n in enumerate(reads)]
    order = [i for _, i in sorted(released, key=lambda pair: pair[0])]
    assert order == list(range(500))


def test_delay_is_never_negative_when_jitter_exceeds_latency():
    sched = DelayScheduler(random.Random(1))
    assert all(sched.delay_s(5, 50) >= 0 for _ in range(1000))


def test_a_change_of_latency_does_not_let_new_chunks_overtake_old_ones():
    sched = DelayScheduler(random.Random(0))
    first = sched.release_at(0.0, latency_ms=200)
    second = sched.release_at(0.01, latency_ms=0)  # latency removed while a chunk waits
    assert second == pytest.approx(first)


# --------------------------------------------------------------------------- token bucket


def _send(bucket: TokenBucket, total_bytes: int, start_s: float = 0.0) -> float:
    """Send total_bytes in bucket-sized slices the way the proxy does; return the end time."""
    now = start_s
    sent = 0
    while sent < total_bytes:
        n = min(bucket.slice_bytes, total_bytes - sent)
        now += bucket.reserve(n, now)
        sent += n
    return now


def test_bucket_lets_a_burst_through_at_once():
    bucket = TokenBucket(100_000, burst_bytes=5_000, now_s=0.0)
    assert bucket.reserve(5_000, 0.0) == 0.0
    assert bucket.reserve(1_000, 0.0) == pytest.approx(0.01)


def test_200_kb_at_100_kb_per_s_takes_about_two_seconds():
    bucket = TokenBucket(100_000, now_s=0.0)
    elapsed = _send(bucket, 200_000)
    assert elapsed == pytest.approx((200_000 - bucket.burst_bytes) / 100_000, rel=0.01)


def test_two_senders_sharing_a_bucket_are_limited_together():
    bucket = TokenBucket(50_000, burst_bytes=1_000, now_s=0.0)
    now = 0.0
    for _ in range(50):  # two connections alternate 1 KB slices
        now += bucket.reserve(1_000, now)
        now += bucket.reserve(1_000, now)
    assert now == pytest.approx((100_000 - 1_000) / 50_000, rel=0.01)


def test_an_idle_bucket_refills_only_up_to_its_burst():
    bucket = TokenBucket(10_000, burst_bytes=1_000, now_s=0.0)
    assert bucket.reserve(11_000, now_s=100.0) == pytest.approx(1.0)


def test_a_zero_rate_is_refused():
    with pytest.raises(ValueError, match="> 0"):
        TokenBucket(0)


# --------------------------------------------------------------------------- settings


def test_settings_accept_a_partial_update():
    settings = FaultSettings()
    settings.update({"latency_up_ms": 50, "blackhole": True})
    assert settings.latency_ms("up") == (50.0, 0.0)
    assert settings.latency_ms("down") == (0.0, 0.0)
    assert settings.blackhole is True


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"latency_ms": 5}, "Unknown fault setting 'latency_ms'"),
        ({"latency_up_ms": -1}, "must be a number >= 0"),
        ({"bandwidth_bytes_per_s": 0}, "use null"),
        ({"blackhole": "yes"}, "true or false"),
    ],
)
def test_a_bad_setting_is_refused_and_changes_nothing(changes, message):
    settings = FaultSettings(latency_down_ms=10)
    with pytest.raises(ValueError, match=message):
        settings.update({"latency_up_ms": 99, **changes})
    assert settings == FaultSettings(latency_down_ms=10)


def test_faults_are_described_in_one_line():
    assert describe_faults(FaultSettings().as_dict()) == "none"
    both = FaultSettings(latency_up_ms=50, latency_down_ms=50, jitter_up_ms=5, jitter_down_ms=5)
    assert describe_faults(both.as_dict()) == "latency 50 ms +/- 5 ms both ways"
    up = FaultSettings(latency_up_ms=20, bandwidth_bytes_per_s=100_000, blackhole=True)
    assert describe_faults(up.as_dict()) == "latency up 20 ms; bandwidth 100,000 B/s; blackhole"


# --------------------------------------------------------------------------- injector


class FakeProcess:
    """Stands in for a hadrlab Child: remembers the signals it was sent."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.signals: list[str] = []
        self.running = True

    def kill(self) -> None:
        self.signals.append("KILL")
        self.running = False

    def pause(self) -> None:
        self.signals.append("STOP")

    def resume(self) -> None:
        self.signals.append("CONT")

    def alive(self) -> bool:
        return self.running


class FakeProxy:
    """Stands in for a FaultProxy: remembers the calls made on it."""

    name = "link"

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def alive(self) -> bool:
        return True

    def set_latency(self, latency_ms, jitter_ms=0, direction="both"):
        self.calls.append(("latency", latency_ms, jitter_ms, direction))

    def blackhole(self, on=True):
        self.calls.append(("blackhole", on))

    def clear(self):
        self.calls.append(("clear",))


def test_a_kill_is_an_instant_on_the_timeline():
    chaos = Injector()
    proc = FakeProcess("replica-1")
    before = time.time()
    record = chaos.kill(proc)
    assert proc.signals == ["KILL"]
    assert before <= record.t_start <= record.t_end <= time.time()
    frame = chaos.timeline()
    assert list(frame.columns) == ["t", "t_end", "kind", "target", "detail"]
    assert frame.iloc[0][["kind", "target"]].tolist() == ["kill", "replica-1"]


def test_paused_lasts_at_least_the_seconds_given_then_resumes():
    chaos = Injector()
    proc = FakeProcess("redis-b")
    with chaos.paused(proc, seconds=0.2) as fault:
        assert proc.signals == ["STOP"] and fault.active
    assert proc.signals == ["STOP", "CONT"]
    assert fault.record.duration_s >= 0.2


def test_an_error_inside_paused_resumes_at_once():
    chaos = Injector()
    proc = FakeProcess("redis-b")
    start = time.monotonic()
    with pytest.raises(RuntimeError):
        with chaos.paused(proc, seconds=5):
            raise RuntimeError("boom")
    assert proc.signals == ["STOP", "CONT"]
    assert time.monotonic() - start < 1


def test_resume_closes_the_open_pause_record():
    chaos = Injector()
    proc = FakeProcess("redis-b")
    chaos.pause(proc)
    assert len(chaos.active()) == 1
    chaos.resume(proc)
    assert proc.signals == ["STOP", "CONT"]
    assert chaos.active() == [] and chaos.records[0].t_end is not None


def test_rollback_ends_every_active_fault_newest_first():
    proxy, proc = FakeProxy(), FakeProcess("worker")
    with Injector() as chaos:
        chaos.latency(proxy, 100, jitter_ms=10)
        chaos.blackhole(proxy)
        chaos.pause(proc)
    assert proc.signals == ["STOP", "CONT"]
    assert proxy.calls == [
        ("latency", 100, 10, "both"),
        ("blackhole", True),
        ("blackhole", False),
        ("latency", 0, 0, "both"),
    ]
    frame = chaos.timeline()
    assert frame["t_end"].notna().all()
    assert frame["detail"].iloc[0] == "100 ms +/- 10 ms both"


def test_clear_closes_the_records_of_that_proxy_only():
    proxy, proc = FakeProxy(), FakeProcess("worker")
    chaos = Injector()
    chaos.latency(proxy, 50)
    chaos.pause(proc)
    chaos.clear(proxy)
    assert [f.record.kind for f in chaos.active()] == ["pause"]
    chaos.rollback()


def test_an_object_that_is_not_a_process_is_refused_clearly():
    with pytest.raises(TypeError, match="Cannot inject a process fault"):
        Injector().kill("redis")
