"""Chaos Toolkit experiments run by `chaos run` in a child process, judged from the journal."""

import json

import pytest

from hadrlab.chaos import UNHARDENED, read_journal, run_experiment, start_pipeline, toy_experiment, write_experiment


def test_steady_state_broken_before_the_method_is_reported_not_steady(tmp_path):
    """`chaos run` exits 0 here; only the journal says the method never ran."""
    number = tmp_path / "number.txt"
    number.write_text("50\n")
    result = run_experiment(toy_experiment(tmp_path / "before" / "experiment.json", number_file=number,
                                           inject=5, tolerance=(0, 10)))
    assert result.exit_code == 0
    assert result.before_met is False
    assert result.verdict == "not steady"
    assert [a.phase for a in result.activities if a.phase == "method"] == []
    assert number.read_text().strip() == "50"  # the fault was never injected
    assert (tmp_path / "before" / "journal.json").exists() and (tmp_path / "before" / "chaostoolkit.log").exists()


def test_experiment_that_holds_is_reported_held(tmp_path):
    number = tmp_path / "number.txt"
    number.write_text("3\n")
    result = run_experiment(toy_experiment(tmp_path / "holds" / "experiment.json", number_file=number,
                                           inject=7, tolerance=(0, 10), restore=3))
    assert (result.before_met, result.after_met, result.deviated) == (True, True, False)
    assert result.verdict == "held" and result.held
    assert result.output("read-number", "after") == 7.0
    assert number.read_text().strip() == "3"  # the rollback ran


def test_experiment_that_deviates_after_the_fault_is_reported_deviated(tmp_path):
    number = tmp_path / "number.txt"
    number.write_text("3\n")
    result = run_experiment(toy_experiment(tmp_path / "deviates" / "experiment.json", number_file=number,
                                           inject=99, tolerance=(0, 10), restore=3))
    assert result.before_met is True and result.after_met is False
    assert result.deviated and result.verdict == "deviated"
    assert "DEVIATED" in repr(result) and "DEVIATED" in result._repr_html_()
    rollback = [a for a in result.activities if a.phase == "rollback"]
    assert rollback and rollback[0].status == "succeeded"  # rollbacks run even on a deviation
    assert number.read_text().strip() == "3"
    # the journal on disk reads back the same
    again = read_journal(tmp_path / "deviates" / "journal.json")
    assert again.verdict == "deviated" and json.loads((tmp_path / "deviates" / "journal.json").read_text())["deviated"]


@pytest.mark.timeout(180)
def test_registry_outage_breaks_fail_closed_serving(tmp_path):
    """Un-hardened online serving stops answering while the registry is frozen, and recovers after."""
    pipe = start_pipeline(UNHARDENED, name="test-outage", run_dir=tmp_path / "pipe")
    try:
        result = run_experiment(write_experiment("registry-outage", pipe))
        assert result.verdict == "deviated", result.frame().to_string()
        during = result.output("online-slo", "after")
        assert during["availability"] < 0.5
        assert {a.status for a in result.activities if a.phase == "rollback"} == {"succeeded"}
        assert pipe.registry.client().healthy()  # the rollback unfroze it
    finally:
        pipe.stop()
