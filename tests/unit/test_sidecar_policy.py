"""Read-failover policies and the sidecar's bookkeeping, fed with fake checks (no Redis)."""

import json

import pytest

from hadrlab.sidecar import Check, PrimaryOnlyPolicy, Sidecar, ThresholdPolicy, alert, load_policy, write_policy_module

OK = Check("a", True, 1.0)
SLOW = Check("a", True, 80.0)
DOWN = Check("a", False, 100.0, error="TimeoutError")
B_OK = Check("b", True, 1.0)


def _run(policy, checks, region="a", secondary=B_OK):
    """Feed checks of the primary one by one; return the read region after each."""
    regions = []
    for check in checks:
        region = policy.decide(region, check, secondary)
        regions.append(region)
    return regions


def test_n_minus_one_bad_checks_do_not_move_reads_and_n_do():
    policy = ThresholdPolicy(latency_ms=50, consecutive=3, recover_consecutive=5)
    assert _run(policy, [DOWN, DOWN]) == ["a", "a"]
    assert policy.decide("a", DOWN, B_OK) == "b"


def test_slow_checks_count_like_failed_ones():
    assert _run(ThresholdPolicy(latency_ms=50, consecutive=3), [SLOW, DOWN, SLOW]) == ["a", "a", "b"]


def test_a_latency_spike_below_the_threshold_never_moves_reads():
    spikes = [Check("a", True, ms) for ms in (2, 45, 49.9, 50, 3, 48, 47, 46)]
    assert set(_run(ThresholdPolicy(latency_ms=50, consecutive=2), spikes)) == {"a"}


def test_a_good_check_resets_the_count_of_bad_ones():
    policy = ThresholdPolicy(latency_ms=50, consecutive=3)
    assert set(_run(policy, [DOWN, DOWN, OK, DOWN, DOWN, OK] * 5)) == {"a"}


def test_reads_come_back_only_after_m_healthy_checks_in_a_row():
    policy = ThresholdPolicy(latency_ms=50, consecutive=2, recover_consecutive=4)
    assert _run(policy, [DOWN, DOWN]) == ["a", "b"]
    assert _run(policy, [OK, OK, OK], region="b") == ["b", "b", "b"]
    assert policy.decide("b", OK, B_OK) == "a"


def test_a_flapping_primary_does_not_flap_the_decision():
    policy = ThresholdPolicy(latency_ms=50, consecutive=2, recover_consecutive=3)
    regions = _run(policy, [DOWN, DOWN] + [OK, DOWN] * 20 + [OK, OK, OK])
    switches = sum(1 for x, y in zip(regions, regions[1:]) if x != y)
    assert switches == 2  # one failover, one return: none while it flapped
    assert regions[-1] == "a" and set(regions[2:-1]) == {"b"}


def test_reads_never_move_to_a_secondary_that_is_down_itself():
    policy = ThresholdPolicy(consecutive=2)
    b_down = Check("b", False, error="ConnectionError")
    assert _run(policy, [DOWN] * 5, secondary=b_down) == ["a"] * 5
    assert policy.decide("a", DOWN, B_OK) == "b"  # as soon as b answers


def test_primary_only_policy_never_moves_reads():
    assert set(_run(PrimaryOnlyPolicy(), [DOWN] * 10)) == {"a"}


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="at least 1"):
        ThresholdPolicy(consecutive=0)


def test_load_policy_builds_a_class_from_its_module_path_and_explains_failures():
    policy = load_policy("hadrlab.sidecar:ThresholdPolicy", {"consecutive": 7})
    assert isinstance(policy, ThresholdPolicy) and policy.consecutive == 7
    with pytest.raises(ValueError, match="package.module:ClassName"):
        load_policy("ThresholdPolicy")
    with pytest.raises(ValueError, match="write_policy_module"):
        load_policy("no_such_module_here:Policy")


def test_a_policy_written_from_source_is_importable(hadrlab_home, monkeypatch):
    source = """
        class AlwaysB:
            def decide(self, read_region, check, secondary=None):
                return "b"
    """
    spec = write_policy_module(source, module="policy_under_test")
    assert spec == "policy_under_test:AlwaysB"
    assert (hadrlab_home / "policies" / "policy_under_test.py").exists()
    monkeypatch.syspath_prepend(str(hadrlab_home / "policies"))
    assert load_policy(spec).decide("a", OK) == "b"
    with pytest.raises(ValueError, match="defines no class named 'Nope'"):
        write_policy_module(source, class_name="Nope")
    with pytest.raises(SyntaxError):
        write_policy_module("class Broken(:\n    pass")


def test_alerts_have_the_alertmanager_shape():
    firing = alert("firing", "ReadFailover", "b", "reads moved", 0.0)
    resolved = alert("resolved", "ReadFailover", "a", "back", 0.0, 1.5)
    assert firing["labels"]["alertname"] == "ReadFailover" and firing["labels"]["region"] == "b"
    assert firing["startsAt"] == "1970-01-01T00:00:00.000Z" and firing["endsAt"].startswith("0001-")
    assert resolved["endsAt"] == "1970-01-01T00:00:01.500Z"
    assert json.dumps(firing)  # plain JSON


def _sidecar(**env):
    # Clients are created but never used: apply() is fed with fake checks.
    base = {"REDIS_A": "127.0.0.1:1", "REDIS_B": "127.0.0.1:2", "CONSECUTIVE": "2", "RECOVER_CONSECUTIVE": "2"}
    return Sidecar({**base, **env})


def test_the_sidecar_records_switches_and_region_down_and_up():
    sidecar = _sidecar()
    sent = []
    sidecar.alerts.send = sent.append
    for t in range(2):
        sidecar.apply(Check("a", False, 100.0, t, "ConnectionError"), Check("b", True, 1.0, t))
    state = sidecar.state()
    assert state["read_region"] == "b" and state["primary"]["consecutive_bad"] == 2
    assert state["primary"]["down_since"] == 1 and len(state["decisions"]) == 1
    for t in range(2, 4):
        sidecar.apply(Check("a", True, 1.0, t), Check("b", True, 1.0, t))
    assert sidecar.state()["read_region"] == "a" and sidecar.state()["primary"]["down_since"] is None
    assert [(a["status"], a["labels"]["alertname"]) for a in sent] == [
        ("firing", "RegionDown"), ("firing", "ReadFailover"), ("resolved", "RegionDown"), ("resolved", "ReadFailover")]
    assert len(sidecar.history_since(1.5)) == 4  # two rounds of two checks after t=1.5
    assert 'sidecar_read_region{region="a"} 1' in sidecar.metrics()


def test_a_policy_that_raises_or_answers_nonsense_leaves_reads_where_they_are():
    class Broken:
        def __init__(self):
            self.calls = 0

        def decide(self, read_region, check, secondary=None):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("oops")
            return "z"

    sidecar = _sidecar()
    sidecar.policy = Broken()
    sidecar.apply(DOWN, B_OK)
    sidecar.apply(DOWN, B_OK)
    assert sidecar.state()["read_region"] == "a"


def test_policy_errors_are_counted_and_shown_in_state_history_and_metrics():
    """A policy that raises is not silent: /state, /history and /metrics say so, with the exception."""

    class Unfinished:
        def decide(self, read_region, check, secondary=None):
            raise NotImplementedError("count bad/good checks in a row")

    sidecar = _sidecar()
    sidecar.policy = Unfinished()
    for t in range(3):
        sidecar.apply(Check("a", True, 1.0, t + 1), Check("b", True, 1.0, t + 1))
    errors = sidecar.state()["policy_errors"]
    assert errors["count"] == 3 and len(errors["recent"]) == 3
    assert errors["last"]["error"] == "NotImplementedError: count bad/good checks in a row"
    history = sidecar.history_since(0)
    assert len(history) == 6 and all(h["policy_error"].startswith("NotImplementedError") for h in history)
    assert "sidecar_policy_errors_total 3" in sidecar.metrics()


def test_a_policy_answering_no_region_is_a_policy_error_too():
    class Lazy:
        def decide(self, read_region, check, secondary=None):
            return None  # a stub that only says `pass`

    sidecar = _sidecar()
    sidecar.policy = Lazy()
    sidecar.apply(OK, B_OK)
    assert sidecar.state()["policy_errors"]["last"]["error"] == "decide() returned None, not a region ('a' or 'b')"


def test_a_working_policy_has_no_policy_errors():
    sidecar = _sidecar()
    sidecar.apply(OK, B_OK)
    assert sidecar.state()["policy_errors"] == {"count": 0, "last": None, "recent": []}
    assert sidecar.history_since(-1)[0]["policy_error"] == ""


def test_missing_region_address_is_a_clear_error():
    with pytest.raises(ValueError, match="REDIS_B is not set"):
        Sidecar({"REDIS_A": "127.0.0.1:1"})


# --------------------------------------------------------------------------- data trust

from hadrlab.sidecar import DataTrust  # noqa: E402

A, B = "127.0.0.1:7001", "127.0.0.1:7002"


def _replica(of=A, link="up", syncing=0, replid="r1"):
    host, port = of.split(":")
    return {"role": "slave", "master_host": host, "master_port": int(port), "master_link_status": link,
            "master_sync_in_progress": syncing, "master_replid": replid}


def test_the_elected_master_and_its_linked_replica_are_fit():
    trust = DataTrust()
    assert trust.judge("a", A, {"role": "master", "master_replid": "r1"}, elected=A) == ""
    assert trust.judge("b", B, _replica(of=A), elected=A) == ""


def test_a_master_the_sentinels_did_not_elect_is_unfit():
    problem = DataTrust().judge("a", A, {"role": "master", "master_replid": "new"}, elected=B)
    assert "did not elect" in problem and "not serving reads" in problem and B in problem


def test_without_sentinel_any_master_is_fit_and_only_the_replica_link_is_judged():
    trust = DataTrust()
    assert trust.judge("a", A, {"role": "master"}, elected=None) == ""
    assert "full sync" in trust.judge("b", B, _replica(syncing=1), elected=None)
    assert "link" in trust.judge("b", B, _replica(link="down"), elected=None)  # never seen linked


def test_a_replica_in_a_full_sync_or_of_another_master_is_unfit():
    trust = DataTrust()
    assert "full sync" in trust.judge("a", A, _replica(of=B, link="down", syncing=1), elected=B)
    assert "not from the Sentinels' primary" in trust.judge("a", A, _replica(of="127.0.0.1:9"), elected=B)


def test_a_replica_that_lost_its_primary_keeps_serving_what_it_has():
    """Read failover: B, seen in sync, stays fit while A is dead; not after a restart."""
    trust = DataTrust()
    assert trust.judge("b", B, _replica(replid="r1"), elected=A) == ""
    assert trust.judge("b", B, _replica(link="down", replid="r1"), elected=A) == ""
    assert "link" in trust.judge("b", B, _replica(link="down", replid="fresh"), elected=A)


def test_a_replica_being_promoted_is_fit_before_the_sentinels_announce_it():
    trust = DataTrust()
    assert trust.judge("b", B, _replica(replid="r1"), elected=A) == ""
    promoted = {"role": "master", "master_replid": "r2", "master_replid2": "r1"}
    assert trust.judge("b", B, promoted, elected=A) == ""
    assert "did not elect" in DataTrust().judge("b", B, promoted, elected=A)  # never seen in sync


def test_a_demoted_old_primary_is_unfit_until_linked():
    trust = DataTrust()
    assert trust.judge("a", A, {"role": "master", "master_replid": "r1"}, elected=A) == ""
    # a partition heals: A, demoted, still has its replication id but not the new data
    assert trust.judge("a", A, _replica(of=B, link="down", replid="r1"), elected=B) != ""
    assert trust.judge("a", A, _replica(of=B, link="up", replid="r2"), elected=B) == ""


def _sentinel_sidecar(**env):
    return _sidecar(REDIS_A=A, REDIS_B=B, SENTINELS="127.0.0.1:1,127.0.0.1:2", SENTINEL_MASTER="features", **env)


def test_an_untrusted_region_is_a_failed_check_for_every_policy():
    sidecar = _sentinel_sidecar()
    check = sidecar.judge(Check("a", True, 1.0, 5.0), {"role": "master"}, elected=B)
    assert check.ok is False and check.latency_ms == 1.0 and "did not elect" in check.error
    assert sidecar.judge(Check("b", True, 1.0), {"role": "master"}, elected=B).ok is True
    assert sidecar.judge(Check("a", False, error="TimeoutError"), None, elected=B).error == "TimeoutError"


def test_the_sidecar_follows_the_elected_primary_and_alerts_once():
    sidecar = _sentinel_sidecar()
    sent = []
    sidecar.alerts.send = sent.append
    assert sidecar.follow(A, "127.0.0.1:1", "") == A and sidecar.primary == "a"
    for t in range(2):  # A dies: reads move to B, the replica
        sidecar.apply(Check("a", False, 100.0, t, "ConnectionError"), Check("b", True, 1.0, t))
    assert sidecar.state()["read_region"] == "b"
    assert sidecar.follow(B, "127.0.0.1:1", "") == B
    sidecar.follow(B, "127.0.0.1:2", "")
    state = sidecar.state()
    assert state["primary"]["region"] == "b" and state["secondary"]["region"] == "a"
    assert [(m["from"], m["to"]) for m in state["primary_moves"]] == [("a", "b")]
    assert [(a["status"], a["labels"]["alertname"]) for a in sent][-2:] == [
        ("firing", "PrimaryMoved"), ("resolved", "ReadFailover")]
    # an address that is neither region: judged without Sentinel, primary unchanged
    assert sidecar.follow("127.0.0.1:9", "127.0.0.1:1", "") is None and sidecar.primary == "b"
    assert sidecar.follow(None, "", "Sentinel 127.0.0.1:1: ConnectionError") is None


def test_a_sidecar_started_after_a_failover_begins_on_the_elected_primary_quietly():
    sidecar = _sentinel_sidecar()
    sent = []
    sidecar.alerts.send = sent.append
    sidecar.follow(B, "127.0.0.1:1", "")
    assert (sidecar.primary, sidecar.read_region) == ("b", "b") and sent == []


def test_reads_never_go_to_an_untrusted_region_whatever_the_policy_says():
    class LettersPolicy:  # a policy that knows only the letters: "a" is the primary
        def decide(self, read_region, check, secondary=None):
            return "a"

    sidecar = _sentinel_sidecar()
    sidecar.policy = LettersPolicy()
    sidecar.follow(B, "127.0.0.1:1", "")
    a = sidecar.judge(Check("a", True, 1.0, 1.0), {"role": "master"}, elected=B)
    sidecar.apply(Check("b", True, 1.0, 1.0), a)
    assert sidecar.state()["read_region"] == "b"
    linked = sidecar.judge(Check("a", True, 1.0, 2.0), _replica(of=B), elected=B)
    sidecar.apply(Check("b", True, 1.0, 2.0), linked)
    assert sidecar.state()["read_region"] == "a"  # A is a linked replica now: the policy's choice stands


def test_threshold_policy_counts_again_when_the_primary_changes():
    policy = ThresholdPolicy(latency_ms=50, consecutive=2, recover_consecutive=2)
    assert _run(policy, [DOWN]) == ["a"]
    # Sentinel elected B: its checks come first now; A's bad streak does not count against B
    b_down = Check("b", False, error="TimeoutError")
    assert policy.decide("b", b_down, OK) == "b"
    assert policy.decide("b", b_down, OK) == "a"
    assert PrimaryOnlyPolicy().decide("a", B_OK, OK) == "b"
