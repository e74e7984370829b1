"""Settings from environment variables: numbers, on/off flags and host:port addresses.

Every hadrlab service is configured as a container is, through environment variables. These
readers turn one variable into a value, or fail with a ValueError that names the variable,
the value it holds and what it should hold, so a typo in a notebook cell is caught at start:

    env_number("SHUTDOWN_DRAIN_S", 0.0, env=env, minimum=0)   # 0.0 when unset or blank
    env_flag("BREAKER", True)                                  # 1/0, true/false, on/off, yes/no
    parse_address("127.0.0.1:6379", "REDIS_A")                 # ("127.0.0.1", 6379)
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from hadrlab.processes import HOST

__all__ = ["env_number", "env_flag", "parse_address"]

_TRUE = ("1", "true", "on", "yes")
_FALSE = ("0", "false", "off", "no")


def env_number(
    name: str,
    default: float,
    *,
    env: Mapping[str, str] | None = None,
    minimum: float | None = None,
    above: float | None = None,
    integer: bool = False,
) -> float:
    """Read a number from the environment variable ``name``.

    Args:
        name: the variable, e.g. ``"PORT"``.
        default: returned, as given, when the variable is unset or blank.
        env: where to look (default ``os.environ``).
        minimum: the smallest value allowed, if any (``value >= minimum``).
        above: a bound the value must exceed, if any (``value > above``).
        integer: read a whole number (``int``) instead of a ``float``.

    Returns:
        The number.

    Raises:
        ValueError: the value is not a number, or is out of bounds.
    """
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    expected = "a whole number" if integer else "a number"
    if minimum is not None:
        expected += f" >= {minimum:g}"
    if above is not None:
        expected += f" > {above:g}"
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = None
    # Written so that NaN passes, as float("nan") always did here.
    if value is None or (minimum is not None and value < minimum) or (above is not None and value <= above):
        raise ValueError(f"{name} must be {expected}; got {raw!r}.")
    return value


def env_flag(name: str, default: bool, *, env: Mapping[str, str] | None = None) -> bool:
    """Read an on/off switch from the environment variable ``name``.

    Args:
        name: the variable, e.g. ``"BREAKER"``.
        default: returned when the variable is unset or blank.
        env: where to look (default ``os.environ``).

    Returns:
        True for 1, true, on or yes; False for 0, false, off or no (any case).

    Raises:
        ValueError: any other value.
    """
    raw = (os.environ if env is None else env).get(name, "").strip()
    if not raw:
        return default
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ValueError(f"{name} must be 0 or 1 (or true/false, on/off, yes/no); got {raw!r}.")


def parse_address(value: str, name: str) -> tuple[str, int]:
    """Split a ``host:port`` address; an empty host means 127.0.0.1.

    Args:
        value: e.g. ``"127.0.0.1:6379"`` or ``":6379"``.
        name: the variable it came from, for the error message.

    Returns:
        ``(host, port)``.

    Raises:
        ValueError: no ``:`` or a port that is not a whole number.
    """
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f'{name} must look like "127.0.0.1:6379" (host:port); got {value!r}.')
    return host or HOST, int(port)
