"""Lab 02's drills: stale-read accounting, notebook policies for the sidecar, and one real kill drill."""

from __future__ import annotations

import linecache
import time

import pandas as pd
import pytest

from hadrlab.drills import mark_stale_reads, run_drill, summary_table, write_policy_class
from hadrlab.sidecar import Check, load_policy


def _writes(rows):
    return pd.DataFrame(rows, columns=["t", "seq", "card_id", "ok", "region", "latency_ms", "error"])


def _reads(rows):
    frame = pd.DataFrame(rows, columns=["t_start", "card_id", "seq", "ok"])
    frame["ok"] = frame["ok"].astype(bool)
    return frame


def test_a_read_is_stale_only_if_a_newer_write_of_its_card_was_acknowledged_before_it():
    writes = _writes([
        (10.0, 1, "c1", 1, "a", 10.0, ""),   # acknowledged at 10.01
        (11.0, 2, "c2", 1, "a", 10.0, ""),   # another card
        (12.0, 3, "c1", 1, "a", 500.0, ""),  # acknowledged at 12.5
        (13.0, 4, "c1", 0, "a", 1.0, "ConnectionError"),  # never acknowledged
    ])
    reads = _reads([
        (11.5, "c1", 1, True),    # seq 3 not acknowledged yet: fresh
        (12.7, "c1", 1, True),    # seq 3 acknowledged 0.2 s earlier: stale
        (12.7, "c1", 3, True),    # saw seq 3: fresh (seq 4 was never acknowledged)
        (12.7, "c2", 2, True),    # newest of its card: fresh
        (12.7, "c1", None, False),  # failed read: never stale
    ])
    out = mark_stale_reads(reads, writes)
    assert out["stale"].tolist() == [False, True, False, False, False]
    assert out.loc[1, "staleness_s"] == pytest.approx(0.2, abs=1e-3)
    assert out.loc[0, "staleness_s"] == 0.0


def test_a_policy_class_defined_in_a_notebook_cell_is_handed_to_the_sidecar(monkeypatch):
    # A notebook cell: its text lives only in linecache, under a made-up file name.
    cell = (
        "import math\n"
        "class CellPolicy:\n"
        "    def __init__(self, bad_after=2):\n"
        "        self.bad_after, self.bad = bad_after, 0\n"
        "    def decide(self, read_region, check, secondary=None):\n"
        "        self.bad = 0 if check.ok else self.bad + 1\n"
        "        return 'b' if self.bad >= self.bad_after else 'a'\n"
    )
    filename = "/tmp/ipykernel_0/123456.py"
    linecache.cache[filename] = (len(cell), None, cell.splitlines(True), filename)
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(cell, filename, "exec"), namespace)
        spec = write_policy_class(namespace["CellPolicy"], module="drills_test_policy")
    finally:
        linecache.cache.pop(filename, None)
    assert spec == "drills_test_policy:CellPolicy"
    from hadrlab.sidecar import _policy_dir

    monkeypatch.syspath_prepend(str(_policy_dir()))  # the sidecar's PYTHONPATH has this folder
    policy = load_policy(spec, {"bad_after": 2})  # imports the written module, as the sidecar does
    down = Check("a", False)
    assert [policy.decide("a", down), policy.decide("a", down)] == ["a", "b"]


def test_a_class_without_findable_source_gets_a_clear_error():
    namespace = {"__name__": "__main__"}
    exec(compile("class Lost:\n    def decide(self, r, c, s=None):\n        return 'a'\n", "<nowhere>", "exec"),
         namespace)
    with pytest.raises(ValueError, match="source of class Lost cannot be found"):
        write_policy_class(namespace["Lost"])


@pytest.mark.timeout(120)
def test_a_kill_drill_measures_read_and_write_rto_and_alerts():
    import hadrlab

    fs = hadrlab.start_feature_store(down_after_ms=1000)
    try:
        txns = hadrlab.generate_transactions(200, seed=5, n_cards=10)
        with fs.master_for() as client:
            hadrlab.write_features(client, txns)
        env = fs.connection_env()
        receiver = hadrlab.start_alert_receiver(name="drill-alerts")
        sidecar = hadrlab.start_sidecar(env, name="drill-sidecar", alert_url=receiver.url + "/alerts",
                                        check_interval_ms=100)
        api = hadrlab.start_fraud_api(env, name="drill-api", sidecar_url=sidecar.url)
        writer = hadrlab.start_feature_writer(env, name="drill-writer", rate_tps=20, n_cards=10)
        try:
            drill = run_drill("kill", fs=fs, api=api, sidecar=sidecar, receiver=receiver, fault=fs.kill_primary,
                              duration_s=7, fault_at_s=2, transactions=txns, users=1, writer="drill-writer",
                              expect_primary="a", failover_expected=True)
            # B is the primary now: a drill that expects A refuses to start and says why.
            with pytest.raises(hadrlab.DrillNotReady) as refused:
                run_drill("again", fs=fs, api=api, sidecar=sidecar, expect_primary="a", steady_timeout_s=1,
                          writer="drill-writer")
        finally:
            for child in (writer, api, sidecar, receiver):
                child.stop()
    finally:
        fs.stop()
    assert (drill.old_primary, drill.new_primary) == ("a", "b")
    assert drill.start_state.startswith("a steady state: region a primary, region b a linked replica"), drill
    assert drill.start_state.endswith("reads on region a") or "(after waiting" in drill.start_state
    assert drill.notes == [], drill.notes
    message = str(refused.value)
    assert "'again'" in message and "region b the primary, not region a" in message, message
    assert "fail_back(fs, 'a')" in message, message
    assert drill.read_rto_s is not None and drill.read_rto_s < 3, drill
    assert drill.write_rto_s is not None and 1.0 <= drill.write_rto_s < 6, drill
    assert ("firing", "ReadFailover", "b") in set(zip(drill.alerts.status, drill.alerts.alertname, drill.alerts.region))
    assert "+switch-master" in set(drill.events["kind"])
    assert drill.load.requests > 0 and len(drill.reads) > 50
    # Region B stays up through a kill of A: every read finds a region that answers.
    assert drill.failed_reads <= 2, drill.reads[~drill.reads["ok"]]
    assert drill.load.failures <= 2, drill.load.timeline[~drill.load.timeline["ok"]]
    table = summary_table([drill], [])
    assert table.loc["kill", "write_rto_s"] == round(drill.write_rto_s, 2)


def _drill(**overrides):
    from hadrlab.drills import DrillResult

    events = pd.DataFrame({"t": [102.0, 103.1, 103.2, 104.4], "kind": ["partition", "+sdown", "+odown", "+switch-master"],
                           "detail": "", "source": ["drill", "witness", "witness", "witness"]})
    writes = _writes([
        (101.9, 1, "c1", 1, "a", 10.0, ""),
        (102.0, 2, "c1", 0, "a", 2300.0, "TimeoutError"),  # stuck on the silent region
        (104.3, 3, "c1", 1, "b", 500.0, ""),              # sent before +switch-master, acknowledged by B
    ])
    writes["t_ack"] = writes["t"] + writes["latency_ms"] / 1000
    fields = dict(name="partition", started_at=100.0, ended_at=110.0, fault_t=102.0, restore_t=107.0,
                  old_primary="a", new_primary="b", reads=_reads([]).assign(stale=False), writes=writes,
                  events=events, decisions=[], alerts=pd.DataFrame(columns=["t", "status", "alertname", "region"]))
    return DrillResult(**{**fields, **overrides})


def _probe_reads(rows):
    """Read-probe rows: (t_start, ok, replica); each answered 10 ms later, within budget."""
    frame = pd.DataFrame(rows, columns=["t_start", "ok", "replica"])
    frame["t_end"] = frame["t_start"] + 0.01
    frame["ok"] = frame["ok"].astype(bool)
    frame["within_budget"] = True
    frame["stale"] = False
    return frame


def test_a_drill_that_could_not_see_reads_move_says_why_instead_of_a_bare_none():
    measured = _drill(reads=_probe_reads([(101.0, 1, "a"), (102.5, 1, "a"), (103.4, 1, "b")]))
    assert measured.read_rto_s == pytest.approx(1.41) and measured.read_rto_problem == ""

    already = _drill(reads=_probe_reads([(101.0, 1, "b"), (101.5, 1, "b"), (103.0, 1, "b")]))
    assert already.read_rto_s is None
    assert "already served by region b before the fault" in already.read_rto_problem

    short = _drill(restore_t=102.3, reads=_probe_reads([(101.0, 1, "a"), (102.2, 1, "a"), (104.0, 1, "a")]))
    assert short.read_rto_s is None
    assert "never left region a: the fault lasted 0.3 s" in short.read_rto_problem
    assert "DRILL_S" in short.read_rto_problem

    assert "no fault" in _drill(fault_t=None).read_rto_problem
    # The hint puts the drill's own problems first, the author's hint last.
    noted = _drill(notes=["Sentinel failed over during this drill"], restore_t=102.3,
                   reads=_probe_reads([(101.0, 1, "a"), (104.0, 1, "a")]))
    hint = noted.policy_hint("reads must move to b", read_rto=True)
    assert hint.startswith("Sentinel failed over during this drill; reads never left region a")
    assert hint.endswith("; reads must move to b")
    assert "note: Sentinel failed over" in repr(noted)


def test_read_switch_times_follow_the_check_round_and_the_streaks():
    from hadrlab.drills import read_switch_times

    # Checks every 100 ms, but a bad check of a slow region waits for its 160 ms timeout.
    assert read_switch_times(100, 80, 3, 5) == pytest.approx(((4 * 160 + 100) / 1000, (500 + 100 + 160) / 1000))
    # Slow checks: the interval is the round.
    assert read_switch_times(500, 80, 3, 5) == pytest.approx(((4 * 500 + 100) / 1000, (2500 + 100 + 500) / 1000))


def test_failover_steps_say_where_the_write_rto_went():
    steps = _drill().failover_steps()
    assert steps["+sdown"] == 1.1 and steps["+odown"] == 1.2 and steps["+switch-master"] == 2.4
    assert steps["writer: longest failed write (s)"] == 2.3
    assert steps["writer: first write to the new primary sent"] == 2.3
    assert steps["writer: ... and acknowledged (write RTO)"] == pytest.approx(_drill().write_rto_s, abs=0.01)


def test_a_drill_whose_policy_raised_says_so_in_its_hint_and_row():
    quiet = _drill()
    assert quiet.policy_hint("is the threshold right?") == "is the threshold right?"
    assert "policy_errors" not in quiet.as_row()
    failed = _drill(policy_errors=42, policy_error="NotImplementedError: count bad/good checks in a row")
    hint = failed.policy_hint("is the threshold right?")
    assert "NotImplementedError: count bad/good checks in a row" in hint and "42" in hint
    assert "ReadFailoverPolicy.decide" in hint
    assert failed.as_row()["policy_errors"].startswith("42 (NotImplementedError")


def test_labels_of_events_close_in_time_are_set_side_by_side():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hadrlab.drills import _label_offsets_pt

    fig, ax = plt.subplots(figsize=(10, 3))
    try:
        xs = [1.0, 4.45, 4.5, 4.52, 8.0]
        offsets = _label_offsets_pt(xs, 10.0, fig, ax)
    finally:
        plt.close(fig)
    per_s = 10 * 72 * ax.get_position().width / 10.0
    placed = [x * per_s + dx for x, dx in zip(xs, offsets)]
    assert all(b - a >= 9.0 - 1e-6 for a, b in zip(placed, placed[1:]))  # no two labels overlap
    assert offsets[0] == 2 and offsets[-1] == 2  # a label with room stays next to its line


def test_starting_a_second_feature_store_names_the_one_still_running(capsys):
    from types import SimpleNamespace

    from hadrlab import featurestore

    alive = SimpleNamespace(alive=lambda: True)
    running = SimpleNamespace(_stopped=False, sentinels=[alive], region_a=SimpleNamespace(name="a", address="127.0.0.1:7001"),
                              region_b=SimpleNamespace(name="b", address="127.0.0.1:7002"))
    stopped = SimpleNamespace(**{**vars(running), "_stopped": True})
    saved = list(featurestore._STARTED)
    featurestore._STARTED[:] = [running, stopped]
    try:
        featurestore._note_running_stores()
    finally:
        featurestore._STARTED[:] = saved
    out = capsys.readouterr().out
    assert out.count("note:") == 1 and "127.0.0.1:7001" in out and "hadrlab.stop_children()" in out


def test_cards_behind_names_a_card_whose_newest_acknowledged_write_is_missing():
    import hadrlab
    from hadrlab.drills import cards_behind

    fs = hadrlab.start_feature_store(down_after_ms=1000, timeout_s=30)
    try:
        writer = hadrlab.start_feature_writer(fs.connection_env(), rate_tps=50, n_cards=5, name="behind-writer")
        time.sleep(1.5)
        writer.stop()
        assert len(cards_behind(fs, "behind-writer", settle_s=0.5)) == 0
        # Lose the newest write of one card, as a failover that took it on the old primary would.
        with fs.master_for() as client:
            client.hset("features:card:card-00001", "seq", 1)
        behind = cards_behind(fs, "behind-writer", settle_s=0.5)
        assert list(behind["card_id"]) == ["card-00001"]
        assert behind["stored_seq"].iloc[0] == 1 and behind["acked_seq"].iloc[0] > 1
    finally:
        fs.stop()
