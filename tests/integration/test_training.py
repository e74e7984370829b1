"""The continuous-training worker, as real processes: a real Redis, a real registry."""

from __future__ import annotations


import pytest

from hadrlab.contracts import corrupt
from hadrlab.processes import wait_until
from hadrlab.registry import start_registry
from hadrlab.replication import start_redis
from hadrlab.training import make_training_data, start_trainer, trainer_status, write_training_data

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def clean_data():
    return make_training_data(2000, seed=0)


@pytest.fixture
def redis_node(clean_data):
    node = start_redis("training-data")
    write_training_data(node.client(), clean_data)
    yield node
    node.stop()


@pytest.fixture
def registry(tmp_path):
    reg = start_registry("registry-training", data_dir=tmp_path / "registry")
    yield reg
    reg.stop()


def run_to_end(child, timeout_s: float = 90.0):
    try:
        wait_until(lambda: not child.alive(), timeout_s=timeout_s, interval_s=0.1,
                   describe="the trainer to finish its runs")
    finally:
        child.stop()
    assert child.returncode == 0, child.tail(20)
    return trainer_status(child)


def test_killed_trainer_resumes_from_its_checkpoint_and_registers(redis_node, registry, tmp_path):
    """A SIGKILL mid-run costs at most CHECKPOINT_EVERY steps; the run then completes."""
    options = dict(redis=redis_node, registry=registry, checkpoint_dir=tmp_path / "ckpt", checkpoint_every=10,
                   steps_per_run=80, step_delay_ms=25, max_runs=1, schedule_s=0)
    trainer = start_trainer(**options)
    try:
        wait_until(lambda: trainer_status(trainer).step >= 37, timeout_s=60, describe="step 37", child=trainer)
    finally:
        trainer.kill()
    reached = trainer_status(trainer).step
    assert 37 <= reached < 80

    status = run_to_end(start_trainer(**options))
    assert status.restarts == 1
    assert status.resumed_from_step == reached // 10 * 10
    assert 0 <= status.steps_lost_last_restart <= 10
    assert status.steps_lost_last_restart == reached - status.resumed_from_step
    assert status.lost_work_ratio <= 1
    assert status.runs_completed == 1 and status.models_registered == 1
    production = registry.client().production("fraud")
    assert production.version == status.last_version
    assert production.metrics["auc"] > 0.8


def promote_clean_model(redis_node, registry, tmp_path) -> int:
    status = run_to_end(start_trainer(redis=redis_node, registry=registry, checkpoint_dir=tmp_path / "clean",
                                      steps_per_run=20, step_delay_ms=0, max_runs=1, schedule_s=0))
    assert status.models_promoted == 1
    return registry.client().production("fraud").version


@pytest.mark.parametrize("kind", ["flipped_labels", "schema_change"])
def test_corrupted_batch_reaches_production_only_without_a_contract(kind, redis_node, registry, clean_data, tmp_path):
    before = promote_clean_model(redis_node, registry, tmp_path)
    write_training_data(redis_node.client(), corrupt(clean_data, kind=kind, fraction=0.3, seed=2))
    common = dict(redis=redis_node, registry=registry, steps_per_run=20, step_delay_ms=0, max_runs=1, schedule_s=0)

    guarded = run_to_end(start_trainer(checkpoint_dir=tmp_path / "guarded", contract=True, gate=True, **common))
    assert guarded.runs_skipped == 1 and guarded.models_registered == 0
    assert "contract v1 violated" in guarded.skipped[-1]["reason"]
    assert registry.client().production("fraud").version == before

    unguarded = run_to_end(start_trainer(checkpoint_dir=tmp_path / "open", contract=False, gate=False, **common))
    assert unguarded.runs_completed == 1 and unguarded.models_promoted == 1
    assert registry.client().production("fraud").version == unguarded.last_version != before


def test_trainer_waits_out_a_registry_outage(redis_node, registry, tmp_path):
    """With the registry down when the model is ready, the run waits, then registers."""
    registry.kill()
    trainer = start_trainer(redis=redis_node, registry=registry, checkpoint_dir=tmp_path / "outage",
                            steps_per_run=10, step_delay_ms=0, max_runs=1, schedule_s=0)
    try:
        wait_until(lambda: trainer_status(trainer).phase == "waiting_for_registry", timeout_s=60,
                   describe="the trainer waiting for the registry", child=trainer)
        registry.start()
    except BaseException:
        trainer.stop()
        raise
    status = run_to_end(trainer)
    assert status.models_registered == 1 and status.runs_failed == 0
    assert registry.client().production("fraud").version == status.last_version
