"""Feature-store logic that needs no process: configs, result summaries, region lookup."""

from __future__ import annotations

import pandas as pd

from hadrlab.featurestore import (
    MASTER_NAME,
    QUORUM,
    RpoResult,
    WriteRtoResult,
    _write_sentinel_config,
    config_for_restart,
)


def test_sentinel_config_monitors_the_proxy_address_with_quorum_2_and_passwords(tmp_path):
    path = tmp_path / "s.conf"
    _write_sentinel_config(path, port=5000, password="pw", master_port=6001, down_after_ms=500,
                           failover_timeout_ms=2000, data_dir=tmp_path)
    lines = path.read_text().splitlines()
    assert f"sentinel monitor {MASTER_NAME} 127.0.0.1 6001 {QUORUM}" in lines
    assert QUORUM == 2
    assert f"sentinel auth-pass {MASTER_NAME} pw" in lines
    assert "requirepass pw" in lines and "sentinel sentinel-pass pw" in lines
    assert f"sentinel down-after-milliseconds {MASTER_NAME} 500" in lines


def test_a_restarted_server_comes_back_as_a_master_with_its_proxy_announced():
    config = {"b": {"replicaof": ["127.0.0.1", 7000], "replica-announce-port": 7100}}
    restart = config_for_restart(config)
    assert "replicaof" not in restart["b"]
    assert restart["b"]["replica-announce-port"] == 7100
    assert "replicaof" in config["b"]  # the original is untouched


def test_rpo_result_reports_the_lost_fraction_and_the_lag():
    result = RpoResult(mode="async", lag_fault="latency 150 ms", attempted=1001, acknowledged=1000,
                       unconfirmed=1, lost_acknowledged=80, lost_seqs=list(range(920, 1000)),
                       lag_bytes_at_kill=25000, lag_ms_at_kill=155.0, failover_s=2.3, t_kill=0.0)
    assert result.lost_fraction == 0.08
    text = repr(result)
    assert "80 of them LOST (8.0%)" in text and "25,000 B" in text and "155 ms" in text
    assert "<table>" in result._repr_html_()


def test_write_rto_result_counts_failed_writes_by_type():
    result = WriteRtoResult(fault="kill", down_after_ms=1000, t_fault=0.0, rto_s=2.25, old_primary="a",
                            new_primary="b", errors={"ConnectionError": 3, "MasterNotFoundError": 5},
                            ops=pd.DataFrame(), events=pd.DataFrame())
    assert result.failed_writes == 8
    assert "write RTO 2.25 s" in repr(result) and "MasterNotFoundError x5" in repr(result)
    none = WriteRtoResult(fault="kill", down_after_ms=1000, t_fault=0.0, rto_s=None, old_primary="a",
                          new_primary=None, errors={}, ops=pd.DataFrame(), events=pd.DataFrame())
    assert "no recovery" in repr(none)
