"""Benchmarks of Lab 03 (chaos on the ML pipeline): lost training work, exactly-once batch, serving.

Every figure runs the real pipeline of ``hadrlab.start_pipeline`` (Redis, the registry, the
trainer under its supervisor, the online API) and injects its faults with the same
activities the Chaos Toolkit experiments use (``hadrlab.chaos``), called in-process here so
that one pipeline serves several trials.

    bench_lab03_training   training_lost_work_ratio
    bench_lab03_batch      batch_duplicates, batch_gaps
    bench_lab03_serving    serving_availability_registry_outage
"""

from __future__ import annotations

import time

from bench.__main__ import Figure

# Kill points spread over a run of 60 steps, so every position relative to a checkpoint
# (just after one, just before the next) is tried.
KILL_STEPS = (13, 27, 39, 44, 58)
# Kill points of the batch job, in chunks committed before the kill (10 chunks in all).
KILL_CHUNKS = (1, 4, 7)
OUTAGE_RUN_S = 14
OUTAGE_AT_S = 3.0
USERS = 5


def bench_lab03_training() -> list[Figure]:
    """Steps lost by a trainer SIGKILLed mid-run, over its checkpoint interval (worst of 5 kills)."""
    from hadrlab.chaos import HARDENED, action_kill_trainer, probe_trainer_recovery, probe_trainer_steps_lost, start_pipeline

    pipe = start_pipeline(HARDENED, name="bench-training")
    lost, recovery = [], []
    try:
        state = str(pipe.state_path)
        for step in KILL_STEPS:
            action_kill_trainer(state, at_step=step, timeout_s=60)
            recovery.append(probe_trainer_recovery(state, timeout_s=60)["recovery_s"])
            lost.append(probe_trainer_steps_lost(state)["steps_lost"])
    finally:
        pipe.stop()
    every = HARDENED.checkpoint_every
    worst = max(lost) / every
    note = (f"checkpoint every {every} steps of 25 ms; kills at steps {list(KILL_STEPS)} lost {lost} steps; "
            f"kill to next registered model {min(recovery):.1f}-{max(recovery):.1f} s")
    return [Figure("training_lost_work_ratio", worst, "", 1.0, "<=", note)]


def _batch_trials(hardening) -> tuple[int, int, list]:
    from hadrlab.chaos import (_jobs, action_kill_batch_job, action_start_batch_job, action_stop_batch_jobs,
                               probe_batch_exactly_once, start_pipeline)

    pipe = start_pipeline(hardening, name=f"bench-batch-{hardening.commit_mode}")
    duplicates = gaps = 0
    per_trial = []
    try:
        state = str(pipe.state_path)
        for chunks in KILL_CHUNKS:
            action_start_batch_job(state, redis="none", retries=2)
            action_kill_batch_job(state, after_chunks=chunks)
            audit = probe_batch_exactly_once(state, timeout_s=120)
            action_stop_batch_jobs(state)
            duplicates += audit["duplicates"]
            gaps += audit["gaps"]
            per_trial.append((audit["duplicates"], audit["gaps"]))
    finally:
        _jobs.clear()
        pipe.stop()
    return duplicates, gaps, per_trial


def bench_lab03_batch() -> list[Figure]:
    """Duplicates and gaps after a batch job is killed mid-chunk and restarted (3 kills), atomic commits."""
    from hadrlab.chaos import HARDENED, UNHARDENED

    duplicates, gaps, trials = _batch_trials(HARDENED)
    naive_dup, naive_gaps, naive_trials = _batch_trials(UNHARDENED)
    note = (f"atomic commits, 1000 records in chunks of 100, killed after chunks {list(KILL_CHUNKS)} "
            f"(dup, gaps per kill {trials}); the naive job: {naive_trials}")
    return [Figure("batch_duplicates", duplicates, "records", 0, "<=", note),
            Figure("batch_gaps", gaps, "records", 0, "<=", note)]


def _outage_availability(hardening) -> tuple[float, int, float]:
    from hadrlab.chaos import action_end_registry_outage, action_registry_outage, start_pipeline
    from hadrlab.load import start_load
    from hadrlab.metrics import availability

    pipe = start_pipeline(hardening, name=f"bench-serving-{'hard' if hardening.cache_fallback else 'base'}")
    try:
        body = {"features": pipe.state["online"]["features"]}
        run = start_load(pipe.online.url, users=USERS, duration_s=OUTAGE_RUN_S, body=body, name="bench-lab03-load")
        time.sleep(OUTAGE_AT_S)
        t_down = action_registry_outage(str(pipe.state_path))["t"]
        try:
            result = run.wait(progress=False)
        finally:
            action_end_registry_outage(str(pipe.state_path))
        during = result.timeline[result.timeline["t_start"] >= t_down]
        return availability(result, start=t_down), len(during), OUTAGE_RUN_S - OUTAGE_AT_S
    finally:
        pipe.stop()


def bench_lab03_serving() -> list[Figure]:
    """Availability of the online API while its registry is frozen, hardened (and fail-closed, for contrast)."""
    from hadrlab.chaos import HARDENED, UNHARDENED

    hard, n_hard, outage_s = _outage_availability(HARDENED)
    base, n_base, _ = _outage_availability(UNHARDENED)
    note = (f"registry frozen (SIGSTOP) for the last ~{outage_s:.0f} s of a {OUTAGE_RUN_S} s locust run, "
            f"{USERS} users; hardened {n_hard} requests during the outage; fail-closed baseline "
            f"{100 * base:.1f}% of {n_base}")
    return [Figure("serving_availability_registry_outage", hard, "", 0.999, ">=", note)]
