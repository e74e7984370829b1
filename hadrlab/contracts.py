"""Data contracts for training data, the faults that break them, and a promotion gate.

A data contract is the written promise a data producer makes to its consumers: which
columns arrive, with which types, in which ranges, how many nulls at most, and what the
labels look like. The continuous-training worker (:mod:`hadrlab.training`) checks every
batch against it and refuses to train on a batch that breaks it, so a broken upstream
job costs one skipped run instead of a bad model in production.

    contract = DataContract()                     # the fraud training data's contract, v1
    result = contract.validate(frame)             # ContractResult(passed=..., violations=[...])
    bad = corrupt(frame, kind="flipped_labels", fraction=0.2, seed=0)
    contract.validate(bad).passed                 # False: fraud rate 0.22 > 0.15
    gate({"auc": 0.91}, {"auc": 0.93})            # GateDecision(promote=False, ...)

A contract only catches what it describes. Label noise that keeps the fraud rate in its
bounds passes it; that is what the promotion gate, which compares the candidate with the
production model on a trusted hold-out set, is for.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ColumnRule",
    "Violation",
    "ContractResult",
    "DataContract",
    "TRAINING_CONTRACT",
    "validate_training_data",
    "CORRUPTION_KINDS",
    "corrupt",
    "GateDecision",
    "gate",
]

LABEL = "is_fraud"
ID = "txn_id"
# The model's inputs, as hadrlab.fraud.model_inputs computes them.
FEATURES = (
    "log_amount", "amount_ratio", "txn_count_1m", "txn_count_5m", "log_amount_sum_5m",
    "log_seconds_since_last", "category_is_new", "log_n_txns",
)


@dataclass(frozen=True)
class ColumnRule:
    """What the contract promises about one column.

    Args:
        dtype: the kind of values: "int", "float" (ints are fine too) or "str".
        min_value, max_value: inclusive bounds on non-null values (None: no bound).
        max_null_rate: the largest share of nulls allowed (0.0: none at all).
    """

    dtype: str
    min_value: float | None = None
    max_value: float | None = None
    max_null_rate: float = 0.0


@dataclass(frozen=True)
class Violation:
    """One broken promise: which column, which rule, what was observed, what was allowed."""

    column: str
    rule: str
    observed: Any
    allowed: str

    def __str__(self) -> str:
        return f"{self.column}: {self.rule} (observed {self.observed}; allowed {self.allowed})"


@dataclass
class ContractResult:
    """The outcome of checking one frame against a contract."""

    passed: bool
    violations: list[Violation]
    rows: int
    schema_version: str

    @property
    def reason(self) -> str:
        """One line saying why the frame failed ("" when it passed)."""
        return "; ".join(str(v) for v in self.violations)

    def __repr__(self) -> str:
        head = (f"ContractResult(passed={self.passed}, rows={self.rows}, "
                f"schema={self.schema_version}, violations={len(self.violations)})")
        return "\n".join([head, *(f"  - {v}" for v in self.violations)])

    def _repr_html_(self) -> str:
        colour = "#2e7d32" if self.passed else "#c62828"
        verdict = "PASSED" if self.passed else "FAILED"
        title = (f"<p><b style='color:{colour}'>Contract {html.escape(self.schema_version)} "
                 f"{verdict}</b> on {self.rows} rows</p>")
        if not self.violations:
            return title
        rows = "".join(
            f"<tr><td>{html.escape(v.column)}</td><td>{html.escape(v.rule)}</td>"
            f"<td>{html.escape(str(v.observed))}</td><td>{html.escape(v.allowed)}</td></tr>"
            for v in self.violations
        )
        return (title + "<table><tr><th>column</th><th>rule</th><th>observed</th>"
                f"<th>allowed</th></tr>{rows}</table>")


def _default_columns() -> dict[str, ColumnRule]:
    # Bounds are generous for real data and tight enough to catch a unit change or a
    # sentinel value (-1, 1e9) written by a broken upstream job.
    return {
        ID: ColumnRule("int", min_value=0),
        "log_amount": ColumnRule("float", 0.0, 12.0, max_null_rate=0.01),
        "amount_ratio": ColumnRule("float", 0.0, 50.0, max_null_rate=0.01),
        "txn_count_1m": ColumnRule("float", 0.0, 1000.0, max_null_rate=0.01),
        "txn_count_5m": ColumnRule("float", 0.0, 1000.0, max_null_rate=0.01),
        "log_amount_sum_5m": ColumnRule("float", 0.0, 15.0, max_null_rate=0.01),
        "log_seconds_since_last": ColumnRule("float", 0.0, 12.0, max_null_rate=0.01),
        "category_is_new": ColumnRule("float", 0.0, 1.0, max_null_rate=0.01),
        "log_n_txns": ColumnRule("float", 0.0, 20.0, max_null_rate=0.01),
        LABEL: ColumnRule("int", 0, 1),
    }


@dataclass
class DataContract:
    """A contract for the fraud model's training data (schema version ``v1`` by default).

    Args:
        columns: the required columns and their rules; extra columns are a violation
            unless ``allow_extra_columns``.
        label: the label column, whose positive rate must lie in ``label_rate``.
        label_rate: inclusive (low, high) bounds on the share of positive labels.
        min_rows: a smaller batch is refused (too little to learn from).
        schema_version: written into every result, so a log says which contract judged.

    Example:
        >>> DataContract().validate(frame).passed
        True
    """

    columns: Mapping[str, ColumnRule] = field(default_factory=_default_columns)
    label: str = LABEL
    label_rate: tuple[float, float] = (0.005, 0.15)
    min_rows: int = 100
    allow_extra_columns: bool = False
    schema_version: str = "v1"

    def validate(self, frame: Any) -> ContractResult:
        """Check ``frame`` (a pandas DataFrame) against every rule; never raises on bad data.

        Args:
            frame: the training batch.

        Returns:
            A :class:`ContractResult` listing every violation found.
        """
        import pandas as pd

        found: list[Violation] = []
        rows = len(frame)
        if rows < self.min_rows:
            found.append(Violation("*", "min_rows", rows, f">= {self.min_rows}"))
        present = list(frame.columns)
        for name in self.columns:
            if name not in present:
                found.append(Violation(name, "required_column", "missing", "present"))
        if not self.allow_extra_columns:
            for name in present:
                if name not in self.columns:
                    found.append(Violation(str(name), "unexpected_column", "present",
                                           f"only {', '.join(self.columns)}"))
        for name, rule in self.columns.items():
            if name not in present:
                continue
            column = frame[name]
            nulls = float(column.isna().mean()) if rows else 0.0
            if nulls > rule.max_null_rate:
                found.append(Violation(name, "null_rate", round(nulls, 4), f"<= {rule.max_null_rate}"))
            values = column.dropna()
            wanted = {"int": pd.api.types.is_integer_dtype, "str": pd.api.types.is_string_dtype}
            ok_type = (pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
                       if rule.dtype == "float" else wanted[rule.dtype](column))
            if rule.dtype == "int" and not ok_type and pd.api.types.is_float_dtype(column):
                # nulls turn an int column into floats; whole numbers still keep the promise
                ok_type = bool((values == values.round()).all())
            if not ok_type:
                found.append(Violation(name, "dtype", str(column.dtype), rule.dtype))
                continue  # ranges mean nothing on the wrong type
            if len(values) and rule.min_value is not None and float(values.min()) < rule.min_value:
                found.append(Violation(name, "min_value", _num(values.min()), f">= {rule.min_value:g}"))
            if len(values) and rule.max_value is not None and float(values.max()) > rule.max_value:
                found.append(Violation(name, "max_value", _num(values.max()), f"<= {rule.max_value:g}"))
        if self.label in present and rows:
            labels = pd.to_numeric(frame[self.label], errors="coerce")
            if labels.notna().any():
                rate = float(labels.mean())
                low, high = self.label_rate
                if not low <= rate <= high:
                    found.append(Violation(self.label, "label_rate", round(rate, 4),
                                           f"between {low:g} and {high:g}"))
        return ContractResult(passed=not found, violations=found, rows=rows,
                              schema_version=self.schema_version)


def _num(value: Any) -> Any:
    value = float(value)
    return int(value) if value.is_integer() and abs(value) < 1e15 else round(value, 4)


TRAINING_CONTRACT = DataContract()


def validate_training_data(frame: Any, contract: DataContract | None = None) -> ContractResult:
    """Check a training batch against the training contract (``TRAINING_CONTRACT`` by default).

    Args:
        frame: the batch, a DataFrame with txn_id, the model's features and is_fraud.
        contract: another contract to check against.

    Returns:
        A :class:`ContractResult`.
    """
    return (contract or TRAINING_CONTRACT).validate(frame)


# --------------------------------------------------------------------------- faults

CORRUPTION_KINDS = ("missing", "flipped_labels", "schema_change", "out_of_range")


def corrupt(frame: Any, kind: str = "missing", fraction: float = 0.2, seed: int = 0):
    """Return a corrupted copy of a training batch, the way a broken upstream job would.

    Kinds:
        missing         a share of the feature values become null (an upstream join failed)
        flipped_labels  a share of the labels are flipped 0 <-> 1 (a labelling bug)
        schema_change   ``amount_ratio`` is renamed ``amount_ratio_pct`` and sent as text in
                        percent (a producer changed its schema without telling anyone)
        out_of_range    a share of ``log_amount`` values become -1 or 1e6 (sentinel values)

    Args:
        frame: the clean batch (left untouched).
        kind: one of :data:`CORRUPTION_KINDS`.
        fraction: the share of rows hit (schema_change hits the whole column).
        seed: the random seed, so a corruption can be repeated exactly.

    Returns:
        A new DataFrame.
    """
    import numpy as np

    if kind not in CORRUPTION_KINDS:
        raise ValueError(f"Unknown corruption kind {kind!r}; use one of {', '.join(CORRUPTION_KINDS)}.")
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be between 0 and 1; got {fraction}.")
    rng = np.random.default_rng(seed)
    out = frame.copy()
    n = len(out)
    hit = rng.choice(n, size=int(round(fraction * n)), replace=False) if n else np.array([], int)
    if kind == "missing":
        features = [c for c in FEATURES if c in out.columns]
        for column in features:
            out[column] = out[column].astype(float)
        rows = out.index[hit]
        # each hit row loses one or more features, as a partial join would leave it
        for i, row in enumerate(rows):
            out.loc[row, features[i % len(features)]] = math.nan
            out.loc[row, features[(i * 7 + 3) % len(features)]] = math.nan
    elif kind == "flipped_labels":
        col = out.columns.get_loc(LABEL)
        out.iloc[hit, col] = 1 - out.iloc[hit, col]
    elif kind == "schema_change":
        position = out.columns.get_loc("amount_ratio")
        values = (out.pop("amount_ratio").astype(float) * 100).round(2).astype(str)
        out.insert(position, "amount_ratio_pct", values)
    elif kind == "out_of_range":
        out["log_amount"] = out["log_amount"].astype(float)
        col = out.columns.get_loc("log_amount")
        out.iloc[hit, col] = np.where(rng.random(len(hit)) < 0.5, -1.0, 1e6)
    return out


# --------------------------------------------------------------------------- the gate


@dataclass
class GateDecision:
    """Whether a candidate model may replace production, and why."""

    promote: bool
    reason: str
    metric: str = "auc"
    candidate: float | None = None
    production: float | None = None

    def __repr__(self) -> str:
        return f"GateDecision(promote={self.promote}, reason={self.reason!r})"

    def _repr_html_(self) -> str:
        colour = "#2e7d32" if self.promote else "#c62828"
        word = "PROMOTE" if self.promote else "HOLD"
        return f"<p><b style='color:{colour}'>{word}</b>: {html.escape(self.reason)}</p>"


def _metric(metrics: Mapping | None, metric: str) -> float | None:
    if not metrics:
        return None
    value = metrics.get(metric)
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def gate(
    candidate_metrics: Mapping | None,
    production_metrics: Mapping | None,
    *,
    metric: str = "auc",
    min_improvement: float = 0.0,
    min_value: float = 0.7,
) -> GateDecision:
    """Decide whether a candidate model may be promoted over the production model.

    The candidate must reach ``min_value`` on ``metric`` (higher is better) and, when a
    production model exists, beat it by at least ``min_improvement`` (0.0: equal is
    enough; a negative value tolerates a small regression).

    Args:
        candidate_metrics: the candidate's metrics, e.g. ``{"auc": 0.93}``.
        production_metrics: the production model's metrics, or None if there is none.
        metric: the metric to compare.
        min_improvement: how much better than production the candidate must be.
        min_value: the absolute floor.

    Returns:
        A :class:`GateDecision` with the reason in one sentence.
    """
    cand = _metric(candidate_metrics, metric)
    prod = _metric(production_metrics, metric)
    if cand is None:
        return GateDecision(False, f"the candidate has no {metric} metric, so it cannot be judged",
                            metric, None, prod)
    if cand < min_value:
        return GateDecision(False, f"candidate {metric} {cand:.4f} is below the floor {min_value:g}",
                            metric, cand, prod)
    if prod is None:
        return GateDecision(True, f"no production model yet and candidate {metric} {cand:.4f} "
                                  f">= floor {min_value:g}", metric, cand, None)
    if cand - prod < min_improvement:
        return GateDecision(False, f"candidate {metric} {cand:.4f} does not beat production "
                                   f"{prod:.4f} by {min_improvement:g}", metric, cand, prod)
    return GateDecision(True, f"candidate {metric} {cand:.4f} vs production {prod:.4f} "
                              f"(needed +{min_improvement:g})", metric, cand, prod)
