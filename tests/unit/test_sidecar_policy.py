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


def test_missing_region_address_is_a_clear_error():
    with pytest.raises(ValueError, match="REDIS_B is not set"):
        Sidecar({"REDIS_A": "127.0.0.1:1"})
