"""Benchmarks of Lab 00 (foundations): what a ``WAIT``-acknowledged Redis write costs.

A real primary and replica (``start_redis_pair``) on loopback; one client writes 1 KB
values one at a time, either SET alone (asynchronous replication) or SET then
``WAIT 1 100`` (the write is acknowledged once the replica has it). See ``bench/README.md``.
"""

from __future__ import annotations

from bench.__main__ import Figure

WRITES_PER_ROUND = 500
ROUNDS = 10
VALUE_BYTES = 1024
WAIT_TIMEOUT_MS = 100


def bench_lab00() -> list[Figure]:
    """WAIT 1 throughput over async throughput, and the p50 latency of each, in one run."""
    import numpy as np

    from hadrlab.replication import measure_write_latency, start_redis_pair

    results: dict[str, list] = {"async": [], "wait": []}
    with start_redis_pair(name_prefix="bench-redis") as pair:
        # Alternate the modes so that a change in machine load touches both alike.
        for _ in range(ROUNDS):
            for mode in ("async", "wait"):
                results[mode].append(
                    measure_write_latency(
                        pair, writes=WRITES_PER_ROUND, value_bytes=VALUE_BYTES, mode=mode,
                        wait_replicas=1, wait_timeout_ms=WAIT_TIMEOUT_MS,
                    )
                )

    def ops_per_s(mode: str) -> float:
        # total writes over total time, not a mean of rates: each write weighs the same
        return sum(r.writes for r in results[mode]) / sum(r.writes / r.ops_per_s for r in results[mode])

    def p50_ms(mode: str) -> float:
        return float(np.percentile(np.concatenate([r.latencies_ms for r in results[mode]]), 50))

    unacked = sum(r.unacknowledged for r in results["wait"])
    ratio = ops_per_s("wait") / ops_per_s("async")
    setup = f"{ROUNDS} x {WRITES_PER_ROUND} writes of {VALUE_BYTES} B per mode, alternated, one client"
    return [
        Figure(
            "wait_throughput_ratio", ratio, "", 0.3, ">=",
            f"{setup}; SET+WAIT 1 {WAIT_TIMEOUT_MS} {ops_per_s('wait'):.0f} writes/s, "
            f"SET alone {ops_per_s('async'):.0f} writes/s; {unacked} writes not acknowledged by WAIT",
        ),
        Figure("write_p50_ms_async", p50_ms("async"), "ms", None, "<=", f"SET alone; {setup}"),
        Figure(
            "write_p50_ms_wait", p50_ms("wait"), "ms", None, "<=",
            f"SET then WAIT 1 {WAIT_TIMEOUT_MS}; {setup}",
        ),
    ]
