"""Reading numbers, flags and addresses from environment variables, with errors that name them."""

from __future__ import annotations

import math

import pytest

from hadrlab.settings import env_flag, env_number, parse_address


@pytest.mark.parametrize("raw", [None, "", "   "])
def test_an_unset_or_blank_number_gives_the_default_as_given(raw):
    env = {} if raw is None else {"DRAIN_S": raw}
    assert env_number("DRAIN_S", 2.5, env=env) == 2.5
    assert env_number("DRAIN_S", 7, env=env, integer=True, minimum=1) == 7


def test_numbers_are_read_with_spaces_stripped_and_the_right_type():
    env = {"RATE": " 1e3 ", "PORT": "8080"}
    assert env_number("RATE", 1.0, env=env, above=0) == 1000.0
    port = env_number("PORT", 0, env=env, minimum=0, integer=True)
    assert port == 8080 and isinstance(port, int)


def test_the_process_environment_is_read_when_no_env_is_given(monkeypatch):
    monkeypatch.setenv("HADRLAB_TEST_DELAY_MS", "12.5")
    assert env_number("HADRLAB_TEST_DELAY_MS", 0.0) == 12.5


@pytest.mark.parametrize(
    "raw, options, message",
    [
        ("soon", {"minimum": 0}, "DELAY must be a number >= 0; got 'soon'."),
        ("-2", {"minimum": 0}, "DELAY must be a number >= 0; got '-2'."),
        ("0", {"above": 0}, "DELAY must be a number > 0; got '0'."),
        ("2.5", {"minimum": 0, "integer": True}, "DELAY must be a whole number >= 0; got '2.5'."),
        ("x", {}, "DELAY must be a number; got 'x'."),
    ],
)
def test_a_bad_number_is_named_with_its_value_and_what_is_expected(raw, options, message):
    with pytest.raises(ValueError) as info:
        env_number("DELAY", 1.0, env={"DELAY": raw}, **options)
    assert str(info.value) == message


def test_bounds_are_checked_only_when_given():
    assert env_number("X", 0.0, env={"X": "-3"}) == -3.0
    assert env_number("X", 0.0, env={"X": "0"}, minimum=0) == 0.0
    assert math.isnan(env_number("X", 0.0, env={"X": "nan"}, minimum=0))


@pytest.mark.parametrize(
    "raw, expected",
    [("1", True), ("TRUE", True), (" on ", True), ("yes", True),
     ("0", False), ("False", False), ("off", False), ("no", False), ("", None)],
)
def test_flags_accept_the_usual_spellings(raw, expected):
    assert env_flag("BREAKER", True, env={"BREAKER": raw}) is (True if expected is None else expected)
    assert env_flag("BREAKER", False, env={"BREAKER": raw}) is (False if expected is None else expected)


def test_a_bad_flag_is_named_with_its_value():
    with pytest.raises(ValueError, match=r"^RETRIES must be 0 or 1 .*; got 'maybe'\.$"):
        env_flag("RETRIES", True, env={"RETRIES": "maybe"})


@pytest.mark.parametrize(
    "value, expected",
    [("127.0.0.1:6379", ("127.0.0.1", 6379)), (":6380", ("127.0.0.1", 6380)),
     (" redis-a:7000 ", ("redis-a", 7000)), ("::1:80", ("::1", 80))],
)
def test_addresses_split_into_host_and_port(value, expected):
    assert parse_address(value, "REDIS_A") == expected


@pytest.mark.parametrize("value", ["localhost", "host:port", "host:"])
def test_a_bad_address_is_named_with_its_value(value):
    with pytest.raises(ValueError, match=rf'^REDIS_B must look like "127.0.0.1:6379" .*; got {value!r}\.$'):
        parse_address(value, "REDIS_B")
