"""The batch scoring job, killed and restarted as a real process: exactly once, or not."""

from __future__ import annotations

import time

import pytest

from hadrlab.batch import audit_batch, batch_status, make_batch_input, run_batch_job, start_batch_job
from hadrlab.processes import wait_until
from hadrlab.registry import start_registry
from hadrlab.training import save_model_file

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def batch_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("batch")
    return make_batch_input(600, seed=4, path=folder / "input.csv"), save_model_file(folder / "model.pkl")


@pytest.mark.parametrize("mode, suffix", [("atomic", "db"), ("naive", "csv")])
def test_kill_at_the_same_point_is_harmless_only_with_atomic_commits(mode, suffix, batch_files, tmp_path):
    """KILL_AFTER_CHUNK=2: results of chunk 2 written, its progress marker not yet saved."""
    inp, model = batch_files
    out = tmp_path / f"out.{suffix}"
    options = dict(model=model, commit_mode=mode, chunk_size=50, chunk_delay_ms=10, kill_after_chunk=2)
    first = run_batch_job(inp, out, **options)
    assert first.exit_code == -9  # it really died
    second = run_batch_job(inp, out, **options)
    assert second.exit_code == 0 and second.status["restarts"] == 1
    audit = second.audit
    assert audit.expected == 600 and audit.scored == 600 and audit.gaps == 0
    if mode == "atomic":
        assert audit.duplicates == 0 and audit.exactly_once
    else:
        assert audit.duplicates == 50  # the whole of chunk 2, scored twice


@pytest.mark.parametrize("mode, suffix", [("atomic", "db"), ("naive", "csv")])
def test_kill_mid_chunk_at_a_random_moment(mode, suffix, batch_files, tmp_path):
    """An external SIGKILL during chunk 3: atomic ends exactly once, naive holds duplicates."""
    inp, model = batch_files
    out = tmp_path / f"out.{suffix}"
    options = dict(model=model, commit_mode=mode, chunk_size=50, chunk_delay_ms=300)
    job = start_batch_job(inp, out, **options)
    try:
        wait_until(lambda: batch_status(out).get("chunks_done", 0) >= 3, timeout_s=60,
                   describe="three chunks done", child=job)
        time.sleep(0.15)  # halfway through the next chunk's scoring delay
    finally:
        job.kill()
    assert audit_batch(out, inp).gaps > 0  # it did not finish
    result = run_batch_job(inp, out, **options)
    assert result.exit_code == 0 and result.audit.gaps == 0
    if mode == "atomic":
        assert result.audit.duplicates == 0
    else:
        assert result.audit.duplicates > 0


def test_batch_job_scores_with_the_registry_production_model(batch_files, tmp_path):
    inp, model = batch_files
    registry = start_registry("registry-batch", data_dir=tmp_path / "registry")
    try:
        client = registry.client()
        version = client.register("fraud", model.read_bytes(), {"auc": 0.9}, {})
        client.promote("fraud", version, "production")
        result = run_batch_job(inp, tmp_path / "out.db", registry=registry, chunk_size=200, chunk_delay_ms=0)
    finally:
        registry.stop()
    assert result.exit_code == 0 and result.audit.exactly_once
    assert result.status["model"] == f"fraud:v{version}"


def test_batch_job_reads_features_from_redis(batch_files, tmp_path):
    import pandas as pd

    from hadrlab.fraud import write_features
    from hadrlab.replication import start_redis

    inp, model = batch_files
    node = start_redis("batch-features")
    try:
        frame = pd.read_csv(inp)
        write_features(node.client(), frame.head(300))
        result = run_batch_job(inp, tmp_path / "out.db", model=model, redis=node, chunk_size=100, chunk_delay_ms=0)
    finally:
        node.stop()
    assert result.exit_code == 0 and result.audit.exactly_once
    assert result.status["features_from"] == "redis"
