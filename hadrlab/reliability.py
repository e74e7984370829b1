"""Reliability arithmetic: nines, downtime and error budgets, burn rate, composed availability.

Pure maths, no processes. Every function takes availabilities and SLOs as FRACTIONS
(``0.9995``), never percents (``99.95``); passing a percent raises a ValueError that says so.

Windows have fixed, documented lengths so that every lab and every learner gets the same
numbers (calendar months differ; SLO tools pick one convention and keep it):

    ======== ================
    window   length
    ======== ================
    day      24 h
    week     7 days
    month    30 days
    quarter  91 days (13 weeks)
    year     365 days
    ======== ================

Composition assumes independent failures: parts in series are all needed (multiply their
availabilities); redundant replicas in parallel fail only when all fail at once
(``1 - (1 - a) ** n``). Shared causes (one bad deploy, one region) break that assumption,
which is why later labs measure instead of multiply.

Example:
    >>> downtime_budget(0.9995, "month") / 60
    21.6
    >>> path = ServingPath([Component("load balancer", 0.9999),
    ...                     Component("model replica", 0.995, replicas=3),
    ...                     Component("feature store", 0.999)])
    >>> round(path.availability, 6)
    0.9989
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = [
    "WINDOWS_S",
    "nines",
    "downtime_budget",
    "error_budget",
    "burn_rate",
    "time_to_exhaust",
    "availability_from_mtbf",
    "series",
    "parallel",
    "replicas_needed",
    "format_duration",
    "Component",
    "ServingPath",
]

_DAY_S = 24 * 3600
# Fixed window lengths in seconds; see the module docstring for why they are fixed.
WINDOWS_S: dict[str, int] = {
    "day": _DAY_S,
    "week": 7 * _DAY_S,
    "month": 30 * _DAY_S,
    "quarter": 91 * _DAY_S,
    "year": 365 * _DAY_S,
}


# --------------------------------------------------------------------------- validation


def _check_fraction(value: float, what: str, *, allow_one: bool = False, allow_zero: bool = False) -> float:
    """Return ``value`` as a float if it is a fraction in range; else raise a clear ValueError."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number between 0 and 1, got {value!r}.") from None
    if math.isnan(x):
        raise ValueError(f"{what} must be a number between 0 and 1, got NaN.")
    low_ok = x > 0 or (allow_zero and x == 0)
    high_ok = x < 1 or (allow_one and x == 1)
    if low_ok and high_ok:
        return x
    if 1 < x <= 100:
        raise ValueError(
            f"{what} must be a fraction between 0 and 1, got {value!r}; "
            f"did you mean {x / 100:g}? (Write 99.95% as 0.9995.)"
        )
    lo = "[0" if allow_zero else "(0"
    hi = "1]" if allow_one else "1)"
    hint = ""
    if x == 1 and not allow_one:
        hint = " A 100% objective leaves no budget at all: no deploy, no failure, ever."
    raise ValueError(f"{what} must be in {lo}, {hi}, got {value!r}.{hint}")


def _window_s(window: str | float) -> float:
    if isinstance(window, str):
        try:
            return float(WINDOWS_S[window.strip().lower()])
        except KeyError:
            raise ValueError(
                f"Unknown window {window!r}; use one of {', '.join(WINDOWS_S)} "
                f"or a length in seconds."
            ) from None
    seconds = float(window)
    if not seconds > 0:
        raise ValueError(f"A window must be a positive number of seconds, got {window!r}.")
    return seconds


# --------------------------------------------------------------------------- budgets


def nines(availability: float) -> float:
    """Return the number of nines of ``availability``: 0.999 -> 3.0, 0.9995 -> 3.3.

    Args:
        availability: a fraction in (0, 1]; 1.0 gives ``math.inf``.

    Returns:
        ``-log10(1 - availability)``.
    """
    a = _check_fraction(availability, "availability", allow_one=True)
    if a == 1:
        return math.inf
    return -math.log10(1 - a)


def downtime_budget(slo: float, window: str | float = "month") -> float:
    """Return the downtime an availability SLO allows in a window, in seconds.

    Args:
        slo: the objective as a fraction, e.g. 0.9995 for 99.95%.
        window: "day", "week", "month" (30 d), "quarter" (91 d), "year" (365 d),
            or a length in seconds.

    Returns:
        Seconds of allowed downtime: ``(1 - slo) * window``. 99.95% over a month is
        1296 s (21.6 min); 99.9% over a year is 31,536 s (8.76 h).
    """
    s = _check_fraction(slo, "slo")
    # Rounded to the microsecond so 99.95% of a month is 1296.0 s, not 1295.9999999997.
    return round((1 - s) * _window_s(window), 6)


def error_budget(slo: float, requests: float) -> float:
    """Return how many of ``requests`` may fail while meeting a request-based SLO.

    Args:
        slo: the objective as a fraction (share of requests that must succeed).
        requests: the number of requests expected in the SLO window.

    Returns:
        Allowed failures, ``(1 - slo) * requests`` (a float; round down for a count).
    """
    s = _check_fraction(slo, "slo")
    if requests < 0:
        raise ValueError(f"requests must be >= 0, got {requests!r}.")
    return (1 - s) * requests


def burn_rate(error_rate: float, slo: float) -> float:
    """Return how fast an error rate spends the error budget of ``slo``.

    A burn rate of 1.0 spends exactly the budget over the window; 14.4 spends a 30-day
    budget in about 2 days (a common paging threshold).

    Args:
        error_rate: the observed share of failing requests (or of downtime), a fraction.
        slo: the objective as a fraction.

    Returns:
        ``error_rate / (1 - slo)``.
    """
    e = _check_fraction(error_rate, "error_rate", allow_zero=True, allow_one=True)
    s = _check_fraction(slo, "slo")
    return e / (1 - s)


def time_to_exhaust(burn: float, window: str | float = "month") -> float:
    """Return the seconds until a full error budget is spent at burn rate ``burn``.

    Args:
        burn: a burn rate as returned by :func:`burn_rate` (>= 0).
        window: the SLO window the budget belongs to (see :func:`downtime_budget`).

    Returns:
        ``window / burn`` in seconds; ``math.inf`` when ``burn`` is 0.
    """
    if burn < 0:
        raise ValueError(f"A burn rate cannot be negative, got {burn!r}.")
    w = _window_s(window)
    return math.inf if burn == 0 else w / burn


def availability_from_mtbf(mtbf_h: float, mttr_h: float) -> float:
    """Return steady-state availability from mean time between failures and to repair.

    Args:
        mtbf_h: mean time between failures, hours (> 0).
        mttr_h: mean time to repair, hours (>= 0). Same unit as ``mtbf_h``.

    Returns:
        ``mtbf / (mtbf + mttr)``: halving MTTR buys as much as doubling MTBF.
    """
    if not mtbf_h > 0:
        raise ValueError(f"mtbf_h must be > 0 hours, got {mtbf_h!r}.")
    if mttr_h < 0:
        raise ValueError(f"mttr_h must be >= 0 hours, got {mttr_h!r}.")
    return mtbf_h / (mtbf_h + mttr_h)


# --------------------------------------------------------------------------- composition


def _flatten(values: tuple) -> list[float]:
    # Accept series(a, b, c) and series([a, b, c]) alike.
    if len(values) == 1 and isinstance(values[0], Iterable) and not isinstance(values[0], str):
        values = tuple(values[0])
    if not values:
        raise ValueError("Give at least one availability.")
    return [_check_fraction(v, "availability", allow_one=True) for v in values]


def series(*availabilities: float) -> float:
    """Return the availability of parts that are ALL needed (in series): the product.

    Args:
        availabilities: fractions, as separate arguments or one list.

    Returns:
        ``a1 * a2 * ... * an``; always below the weakest part.
    """
    result = 1.0
    for a in _flatten(availabilities):
        result *= a
    return result


def parallel(*availabilities: float, n: int | None = None) -> float:
    """Return the availability of redundant parts where ONE up is enough (in parallel).

    Call it as ``parallel(0.995, n=3)`` (or ``parallel(0.995, 3)``) for n identical
    replicas, or ``parallel(0.995, 0.99)`` for different ones. Failures are assumed
    independent.

    Args:
        availabilities: fractions, as separate arguments or one list.
        n: the number of identical replicas of a single availability.

    Returns:
        ``1 - (1 - a1) * (1 - a2) * ... * (1 - an)``.
    """
    # parallel(0.995, 3): an integer >= 2 as the second of two arguments is a count, since
    # it cannot be an availability.
    if (
        n is None
        and len(availabilities) == 2
        and isinstance(availabilities[1], int)
        and not isinstance(availabilities[1], bool)
        and availabilities[1] >= 2
    ):
        availabilities, n = availabilities[:1], availabilities[1]
    values = _flatten(availabilities)
    if n is not None:
        if len(values) != 1:
            raise ValueError("Give one availability together with n, e.g. parallel(0.995, n=3).")
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a whole number of replicas >= 1, got {n!r}.")
        values = values * int(n)
    unavailable = 1.0
    for a in values:
        unavailable *= 1 - a
    return 1 - unavailable


def replicas_needed(availability: float, target: float, max_replicas: int = 100) -> int:
    """Return the fewest independent replicas of ``availability`` that reach ``target``.

    Args:
        availability: one replica's availability, a fraction.
        target: the availability the replica set must reach, a fraction.
        max_replicas: give up (ValueError) beyond this many.

    Returns:
        The smallest n with ``parallel(availability, n=n) >= target``.
    """
    a = _check_fraction(availability, "availability")
    t = _check_fraction(target, "target")
    for n in range(1, max_replicas + 1):
        # A tiny tolerance so 1 - 0.01**2 counts as reaching 0.9999 despite float rounding.
        if parallel(a, n=n) >= t - 1e-12:
            return n
    raise ValueError(f"More than {max_replicas} replicas of {a:g} are needed to reach {t:g}.")


# --------------------------------------------------------------------------- display


def format_duration(seconds: float) -> str:
    """Format seconds for people: '26 s', '21.6 min', '8.76 h', '3.65 d'."""
    if math.isinf(seconds):
        return "forever"
    if seconds < 60:
        return f"{seconds:.3g} s"
    if seconds < 3600:
        return f"{seconds / 60:.3g} min"
    if seconds < 2 * _DAY_S:
        return f"{seconds / 3600:.3g} h"
    return f"{seconds / _DAY_S:.3g} d"


def _pct(a: float) -> str:
    # As many decimals as the nines need (99.95%, 99.999988%), but no float noise.
    if a >= 1:
        return "100%"
    decimals = min(8, max(0, math.ceil(-math.log10(1 - a) - 1e-9) - 1))
    text = f"{a * 100:.{decimals}f}"
    return (text.rstrip("0").rstrip(".") if "." in text else text) + "%"


# --------------------------------------------------------------------------- a serving path


@dataclass
class Component:
    """One part of a serving path, optionally run as identical independent replicas.

    Example:
        >>> Component("model replica", 0.995, replicas=3).effective_availability
        0.999999875
    """

    name: str
    availability: float
    replicas: int = 1

    def __post_init__(self) -> None:
        self.availability = _check_fraction(self.availability, f"availability of {self.name!r}", allow_one=True)
        if int(self.replicas) != self.replicas or self.replicas < 1:
            raise ValueError(f"replicas of {self.name!r} must be a whole number >= 1, got {self.replicas!r}.")

    @property
    def effective_availability(self) -> float:
        """Availability of the part as a whole: any one replica up is enough."""
        return parallel(self.availability, n=self.replicas)

    @property
    def downtime_per_month_s(self) -> float:
        """Expected downtime of the part over a 30-day month, in seconds."""
        return (1 - self.effective_availability) * WINDOWS_S["month"]


@dataclass
class ServingPath:
    """A request path whose parts are all needed: series of (possibly replicated) parts.

    Example:
        >>> path = ServingPath([Component("load balancer", 0.9999),
        ...                     Component("model replica", 0.995, replicas=3)])
        >>> path.weakest().name
        'load balancer'
    """

    components: list[Component] = field(default_factory=list)

    @property
    def availability(self) -> float:
        """Availability of the whole path (1.0 for an empty path)."""
        return series(*[c.effective_availability for c in self.components]) if self.components else 1.0

    @property
    def nines(self) -> float:
        return nines(self.availability)

    @property
    def downtime_per_month_s(self) -> float:
        """Expected downtime of the path over a 30-day month, in seconds."""
        return (1 - self.availability) * WINDOWS_S["month"]

    def add(self, component: Component) -> ServingPath:
        """Append a part; returns the path so calls can be chained."""
        self.components.append(component)
        return self

    def remove(self, name: str) -> ServingPath:
        """Remove the part called ``name`` (ValueError if there is none)."""
        for i, c in enumerate(self.components):
            if c.name == name:
                del self.components[i]
                return self
        raise ValueError(f"No part named {name!r}; parts: {[c.name for c in self.components]}.")

    def weakest(self) -> Component:
        """The part that contributes the most downtime: improve it first."""
        if not self.components:
            raise ValueError("The path has no parts yet.")
        return min(self.components, key=lambda c: c.effective_availability)

    def rows(self) -> list[dict]:
        """One dict per part, plus a 'whole path' row: for tables and plots."""
        rows = [
            {
                "part": c.name,
                "replicas": c.replicas,
                "availability": c.availability,
                "effective": c.effective_availability,
                "downtime_per_month_s": c.downtime_per_month_s,
            }
            for c in self.components
        ]
        rows.append(
            {
                "part": "whole path",
                "replicas": None,
                "availability": None,
                "effective": self.availability,
                "downtime_per_month_s": self.downtime_per_month_s,
            }
        )
        return rows

    def __repr__(self) -> str:
        lines = [f"{'part':<18} {'replicas':>8} {'each':>10} {'as a whole':>12} {'down/month':>11}"]
        for r in self.rows():
            each = _pct(r["availability"]) if r["availability"] is not None else ""
            reps = str(r["replicas"]) if r["replicas"] is not None else ""
            lines.append(
                f"{r['part'][:18]:<18} {reps:>8} {each:>10} {_pct(r['effective']):>12} "
                f"{format_duration(r['downtime_per_month_s']):>11}"
            )
        if self.components:
            lines.append(f"nines: {self.nines:.2f}; weakest part: {self.weakest().name}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("part", "replicas", "each", "as a whole", "downtime / month"))
        body = []
        for r in self.rows():
            each = _pct(r["availability"]) if r["availability"] is not None else ""
            reps = r["replicas"] if r["replicas"] is not None else ""
            style = ' style="font-weight:bold"' if r["part"] == "whole path" else ""
            body.append(
                f"<tr{style}><td>{html.escape(r['part'])}</td><td>{reps}</td><td>{each}</td>"
                f"<td>{_pct(r['effective'])}</td><td>{format_duration(r['downtime_per_month_s'])}</td></tr>"
            )
        foot = f"<p>nines: {self.nines:.2f}</p>" if self.components else ""
        return f"<table><tr>{head}</tr>{''.join(body)}</table>{foot}"
