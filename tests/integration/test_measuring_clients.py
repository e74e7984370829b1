"""``python -m hadrlab.featurestore write-probe|seq-probe``: the measuring clients that run
inside a cluster on the kube backend, run here against real redis-server and Sentinels."""

from __future__ import annotations

import sys
import time

import pytest

from hadrlab.featurestore import start_feature_store
from hadrlab.processes import start_process, wait_until

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def fs():
    store = start_feature_store(down_after_ms=800, timeout_s=30)
    yield store
    store.stop()


def _rows(child) -> list[list[str]]:
    text = child.log_path.read_text()
    return [line.split(",") for line in text.splitlines() if line.count(",") >= 2]


def test_write_probe_follows_sentinel_to_the_new_primary(fs):
    sentinels = ",".join(f"{h}:{p}" for h, p in fs.sentinel_addresses)
    regions = f"a=127.0.0.1:{fs.region_a.port},b=127.0.0.1:{fs.region_b.port}"
    probe = start_process("write-probe", [sys.executable, "-m", "hadrlab.featurestore", "write-probe",
                                          "--sentinels", sentinels, "--regions", regions,
                                          "--interval-ms", "10", "--duration-s", "12"],
                          env={"REDIS_PASSWORD": fs.password, "SENTINEL_PASSWORD": fs.password})
    try:
        wait_until(lambda: len(_rows(probe)) > 20, timeout_s=15, describe="the probe's first writes", child=probe)
        fs.kill_primary()
        t_kill = time.time()
        wait_until(lambda: any(r[1] == "1" and r[2] == "b" for r in _rows(probe)[1:]), timeout_s=20,
                   describe="a write acknowledged by region b", child=probe)
    finally:
        probe.stop()
    rows = _rows(probe)
    assert rows[0] == ["t", "ok", "region", "error"]
    data = [(float(t), ok == "1", region, error) for t, ok, region, error in rows[1:]]
    before = [d for d in data if d[0] < t_kill - 0.05]
    assert before and all(ok and region == "a" for _, ok, region, _ in before)
    failed = [d for d in data if not d[1]]
    assert failed and all(error for *_, error in failed), "the kill must cost some writes, each named"
    first_b = min(t for t, ok, region, _ in data if ok and region == "b")
    # Sentinel's failover takes about down-after + 1.25 s; generous bounds on a shared machine.
    assert 0.5 < first_b - t_kill < 12


def test_seq_probe_with_wait_acknowledges_only_writes_the_replica_has(fs):
    probe = start_process("seq-probe", [sys.executable, "-m", "hadrlab.featurestore", "seq-probe",
                                        "--redis", fs.region_a.address, "--run", "t1", "--mode", "wait",
                                        "--writes-per-s", "300", "--duration-s", "1", "--wait-timeout-ms", "200"],
                          env={"REDIS_PASSWORD": fs.password})
    wait_until(lambda: any(r[0] == "attempted" for r in _rows(probe)), timeout_s=20,
               describe="the probe to finish", child=probe)
    probe.stop()
    rows = _rows(probe)
    acked = [int(n) for outcome, n, _ in rows if outcome == "ack"]
    attempted = int(next(n for outcome, n, _ in rows if outcome == "attempted"))
    assert acked and attempted >= len(acked) and acked == sorted(acked)
    with fs.region_b.client() as replica:
        present = replica.exists(*[f"rpo:t1:{n}" for n in acked])
    assert present == len(acked), "WAIT 1 said the replica had every acknowledged write"
