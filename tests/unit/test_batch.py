"""Audit maths of the batch job: duplicates and gaps counted from synthetic outputs."""

from __future__ import annotations

import sqlite3

import pandas as pd

from hadrlab.batch import RESULT_COLUMNS, audit_batch, count_audit


def test_exactly_once_output_has_no_duplicates_and_no_gaps():
    audit = count_audit(range(1, 11), range(1, 11))
    assert (audit.expected, audit.scored, audit.duplicates, audit.gaps) == (10, 10, 0, 0)
    assert audit.exactly_once


def test_a_record_written_three_times_counts_two_duplicates():
    audit = count_audit([1, 2, 3], [1, 2, 2, 2, 3])
    assert audit.duplicates == 2 and audit.gaps == 0 and audit.duplicated_ids == [2]
    assert not audit.exactly_once


def test_gaps_and_duplicates_are_counted_independently():
    audit = count_audit(range(1, 11), [1, 1, 2, 3, 4, 9, 9, 10])
    assert audit.duplicates == 2
    assert audit.gaps == 4 and audit.missing_ids == [5, 6, 7, 8]
    assert audit.scored == 6


def test_results_outside_the_input_are_unexpected():
    audit = count_audit([1, 2], [1, 2, 99])
    assert audit.unexpected == 1 and audit.duplicates == 0 and not audit.exactly_once


def _input(path, n):
    pd.DataFrame({"record_id": range(1, n + 1), "amount": 1.0}).to_csv(path, index=False)
    return path


def test_audit_reads_a_sqlite_output(tmp_path):
    inp = _input(tmp_path / "in.csv", 5)
    out = tmp_path / "out.db"
    with sqlite3.connect(out) as conn:
        conn.execute("CREATE TABLE results (record_id INTEGER, score REAL, decision TEXT, model TEXT, "
                     "chunk INTEGER, scored_at REAL)")
        conn.executemany("INSERT INTO results VALUES (?, 0.1, 'approve', 'm', 0, 0)", [(1,), (2,), (2,), (4,)])
    audit = audit_batch(out, inp)
    assert (audit.expected, audit.scored, audit.duplicates, audit.gaps) == (5, 3, 1, 2)


def test_audit_reads_a_naive_csv_with_a_torn_last_line(tmp_path):
    inp = _input(tmp_path / "in.csv", 4)
    out = tmp_path / "out.csv"
    lines = [",".join(RESULT_COLUMNS)] + [f"{i},0.5,review,m,0,0" for i in (1, 2, 3, 3)] + ["4,0.1"]
    out.write_text("\n".join(lines))
    audit = audit_batch(out, inp)
    assert audit.duplicates == 1 and audit.gaps == 1 and audit.torn_rows == 1
    assert "duplicates=1" in repr(audit) and "NOT exactly once" in audit._repr_html_()


def test_audit_of_a_missing_output_counts_every_record_as_a_gap(tmp_path):
    inp = _input(tmp_path / "in.csv", 3)
    assert audit_batch(tmp_path / "nothing.db", inp).gaps == 3
