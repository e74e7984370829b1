"""Benchmarks of Lab 02 (feature-store DR): Sentinel's write RTO, the sidecar's read failover, RPO.

Real ``redis-server`` and Sentinel processes in two "regions" behind fault proxies
(``start_feature_store``). See ``bench/README.md``.

    bench_lab02_sentinel   sentinel_write_rto_s, sentinel_rto_bound_s, sentinel_rto_ratio
    bench_lab02_reads      read_failover_s, read_failover_bound_s, read_failover_ratio
    bench_lab02_rpo        rpo_lost_acked_writes_wait, rpo_lost_acked_writes_async,
                           wait_throughput_ratio_cross_region
    bench_lab02_spike      spike_failovers_down_after_below_2rtt, spike_failovers_down_after_above_2rtt
"""

from __future__ import annotations

import statistics
import time

from bench.__main__ import Figure

DOWN_AFTER_MS = 1000
SENTINEL_OVERHEAD_S = 1.25  # measured: Sentinel polls INFO once a second during a failover
SENTINEL_TRIALS = 3
CHECK_INTERVAL_MS = 200
CHECK_TIMEOUT_MS = 100  # below the interval, so that a check round fits in one interval
CONSECUTIVE = 3
READ_TRIALS = 3
RPO_TRIALS = 5
RPO_LATENCY_MS = 50
CROSS_REGION_MS = 20
THROUGHPUT_S = 2.0


def bench_lab02_sentinel() -> list[Figure]:
    """Write RTO through Sentinel.master_for over a kill of the primary, vs down-after + 1.25 s."""
    from hadrlab.featurestore import measure_write_rto, start_feature_store

    rtos = []
    for _ in range(SENTINEL_TRIALS):
        with start_feature_store(down_after_ms=DOWN_AFTER_MS) as fs:
            result = measure_write_rto(fs, kill="primary", write_interval_ms=10, timeout_s=20)
        rtos.append(result.rto_s if result.rto_s is not None else float("inf"))
    rto = statistics.median(rtos)
    bound = DOWN_AFTER_MS / 1000 + SENTINEL_OVERHEAD_S
    trials = ", ".join(f"{r:.2f}" for r in rtos)
    note = f"median of {SENTINEL_TRIALS} kills, SET+GET every 10 ms, down-after {DOWN_AFTER_MS} ms; trials {trials} s"
    return [
        Figure("sentinel_write_rto_s", rto, "s", None, "<=", note),
        Figure("sentinel_rto_bound_s", bound, "s", None, "<=", f"down-after {DOWN_AFTER_MS} ms + {SENTINEL_OVERHEAD_S} s"),
        Figure("sentinel_rto_ratio", rto / bound, "", 1.2, "<=", "measured write RTO / (down-after + 1.25 s)"),
    ]


def bench_lab02_reads() -> list[Figure]:
    """Time from a partition of region A until the sidecar moves reads to B, vs interval x consecutive."""
    import httpx

    from hadrlab.featurestore import start_feature_store
    from hadrlab.processes import wait_until
    from hadrlab.sidecar import start_sidecar

    def read_region() -> str:
        return httpx.get(f"{sidecar.url}/state", timeout=2).json()["read_region"]

    times = []
    # down-after far above a trial: the partition moves reads but never triggers a failover.
    with start_feature_store(down_after_ms=30_000) as fs:
        sidecar = start_sidecar(fs.connection_env(), name="bench-sidecar", check_interval_ms=CHECK_INTERVAL_MS,
                                check_timeout_ms=CHECK_TIMEOUT_MS, latency_threshold_ms=50,
                                consecutive=CONSECUTIVE, recover_consecutive=3)
        try:
            for _ in range(READ_TRIALS):
                fs.partition_region("a")
                t_fault = time.time()
                try:
                    wait_until(lambda: read_region() == "b", timeout_s=10, interval_s=0.02)
                    since = httpx.get(f"{sidecar.url}/state", timeout=2).json()["since"]
                    times.append(since - t_fault)
                finally:
                    fs.heal()
                wait_until(lambda: read_region() == "a", timeout_s=10, interval_s=0.05)
        finally:
            sidecar.stop()
    measured = statistics.median(times)
    bound = CHECK_INTERVAL_MS / 1000 * CONSECUTIVE
    trials = ", ".join(f"{t:.2f}" for t in times)
    note = (f"median of {READ_TRIALS} partitions (blackhole) of region A; checks every {CHECK_INTERVAL_MS} ms, "
            f"timeout {CHECK_TIMEOUT_MS} ms, {CONSECUTIVE} in a row; trials {trials} s")
    return [
        Figure("read_failover_s", measured, "s", None, "<=", note),
        Figure("read_failover_bound_s", bound, "s", None, "<=", f"{CHECK_INTERVAL_MS} ms x {CONSECUTIVE} checks"),
        Figure("read_failover_ratio", measured / bound, "", 1.5, "<=", "sidecar switch time / (interval x consecutive)"),
    ]


def _throughput(fs, mode: str, seconds: float) -> float:
    """Acknowledged writes/s of one client in region A (direct to the primary), async or WAIT 1."""
    client = fs.region_a.redis.client(socket_timeout=5)
    acked = 0
    try:
        value = "v" * 256
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        while time.perf_counter() < deadline:
            client.set(f"tput:{mode}:{acked}", value)
            if mode == "wait" and int(client.wait(1, 1000)) < 1:
                continue
            acked += 1
        return acked / (time.perf_counter() - started)
    finally:
        client.close()


def bench_lab02_rpo() -> list[Figure]:
    """Acknowledged writes lost at a kill while the replica lags: WAIT (5 trials) and async; WAIT's cost."""
    from hadrlab.featurestore import measure_rpo, start_feature_store

    wait_results, async_results = [], []
    for _ in range(RPO_TRIALS):
        with start_feature_store(down_after_ms=DOWN_AFTER_MS) as fs:
            wait_results.append(measure_rpo(fs, mode="wait", lag_fault="latency", latency_ms=RPO_LATENCY_MS,
                                            duration_s=1.5, writes_per_s=1000))
    with start_feature_store(down_after_ms=DOWN_AFTER_MS) as fs:
        async_results.append(measure_rpo(fs, mode="async", lag_fault="latency", latency_ms=RPO_LATENCY_MS,
                                         duration_s=2, writes_per_s=1000))
    with start_feature_store(down_after_ms=DOWN_AFTER_MS, cross_region_latency_ms=CROSS_REGION_MS) as fs:
        # Alternate the modes so that a change in machine load touches both alike.
        rates = {"async": [], "wait": []}
        for mode in ("async", "wait", "wait", "async"):
            rates[mode].append(_throughput(fs, mode, THROUGHPUT_S / 2))
    wait_rate, async_rate = statistics.mean(rates["wait"]), statistics.mean(rates["async"])
    lost_wait = sum(r.lost_acknowledged for r in wait_results)
    acked_wait = sum(r.acknowledged for r in wait_results)
    a = async_results[0]
    return [
        Figure("rpo_lost_acked_writes_wait", lost_wait, "writes", 0, "<=",
               f"sum over {RPO_TRIALS} kills, {RPO_LATENCY_MS} ms each way on A's link; {acked_wait} writes acknowledged "
               f"by WAIT 1; {sum(r.unconfirmed for r in wait_results)} unconfirmed (client told)"),
        Figure("rpo_lost_acked_writes_async", a.lost_acknowledged, "writes", None, "<=",
               f"1 kill, {a.acknowledged} acknowledged at ~1000/s; replica behind by {a.lag_bytes_at_kill or 0:,} B / "
               f"{a.lag_ms_at_kill or 0:.0f} ms at the kill ({RPO_LATENCY_MS} ms each way on A's link)"),
        Figure("wait_throughput_ratio_cross_region", wait_rate / async_rate, "", None, ">=",
               f"one client in region A, {CROSS_REGION_MS} ms each way between regions: SET+WAIT 1 "
               f"{wait_rate:.0f} writes/s, SET alone {async_rate:.0f} writes/s"),
    ]



SPIKE_MS = 300  # each way: a 600 ms round trip
SPIKE_HOLD_S = 4.0
SPIKE_TRIALS = 2
LINK_AGE_S = 16  # Sentinel reconnects only links older than its minimum reconnect period (15 s)


def _spike_failovers(down_after_ms: int) -> tuple[int, list[str]]:
    from hadrlab.featurestore import start_feature_store

    failovers, notes = 0, []
    for _ in range(SPIKE_TRIALS):
        with start_feature_store(down_after_ms=down_after_ms, cross_region_latency_ms=5) as fs:
            time.sleep(LINK_AGE_S)
            began = time.time()
            fs.delay_region("a", SPIKE_MS)
            time.sleep(SPIKE_HOLD_S)
            fs.heal()
            time.sleep(2)
            events = fs.events(since=began)
            moved = fs.current_primary() != "a"
            failovers += moved
            first = events.loc[events["kind"] == "+sdown", "t"].min()
            notes.append(f"primary {'moved' if moved else 'stayed'}"
                         + (f", +sdown {first - began:.2f} s into the spike" if first == first else ""))
    return failovers, notes


def bench_lab02_spike() -> list[Figure]:
    """A latency spike that a failover should ride out, against down-after below and above 2 x its round trip.

    Sentinel closes and reopens a link whose PING has waited half of down-after; the new
    connection's PING crosses the same slow network, so the PING stays unanswered past
    down-after whenever the round trip exceeds half of it (Lab 02, Exercise 1).
    """
    rtt = 2 * SPIKE_MS
    below, above = rtt + 400, 2 * rtt + 100  # 1000 ms and 1300 ms for a 600 ms round trip
    n_below, notes_below = _spike_failovers(below)
    n_above, notes_above = _spike_failovers(above)
    common = f"{SPIKE_TRIALS} spikes of {SPIKE_MS} ms each way ({rtt} ms round trip) for {SPIKE_HOLD_S:g} s"
    return [
        Figure("spike_failovers_down_after_below_2rtt", n_below, "failovers", None, ">=",
               f"down-after {below} ms (< 2 x {rtt} ms), {common}: " + "; ".join(notes_below)),
        Figure("spike_failovers_down_after_above_2rtt", n_above, "failovers", 0, "<=",
               f"down-after {above} ms (> 2 x {rtt} ms), {common}: " + "; ".join(notes_above)),
    ]
