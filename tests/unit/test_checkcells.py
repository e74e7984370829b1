"""Putting the course's check cells in place of the learner's, without running anything."""

from __future__ import annotations

from nbformat import v4

from hadrlab.checkcells import CHECK_MIME, CHECK_TAG, lock_check_cells, read_check_outputs


def _nb(*cells):
    nb = v4.new_notebook()
    for cell_id, source, check in cells:
        cell = v4.new_code_cell(source)
        cell.id = cell_id
        if check:
            cell.metadata["tags"] = [CHECK_TAG]
        nb.cells.append(cell)
    return nb


COURSE = _nb(("a", "x = 1", False), ("b", "check(x)", True), ("c", "y = 2", False), ("d", "check(y)", True))


def test_intact_check_cells_are_left_as_they_are_and_reported_as_such():
    learner = _nb(("a", "x = 5", False), ("b", "check(x)", True), ("c", "y = 7", False), ("d", "check(y)", True))
    report = lock_check_cells(learner, COURSE)
    assert [c.source for c in learner.cells] == ["x = 5", "check(x)", "y = 7", "check(y)"]
    assert (report.edited, report.restored, report.untagged, report.note) == ([], [], [], "")


def test_edited_and_deleted_check_cells_get_the_course_source_at_their_place():
    learner = _nb(("a", "x = 5", False), ("b", "check(x, expected=5)", False), ("c", "y = 7", False),
                  ("z", "print('mine')", True))
    report = lock_check_cells(learner, COURSE)
    assert [(c.id, c.source) for c in learner.cells] == [
        ("a", "x = 5"), ("b", "check(x)"), ("c", "y = 7"), ("d", "check(y)"), ("z", "print('mine')")]
    assert (report.edited, report.restored, report.untagged) == (["b"], ["d"], ["z"])
    assert CHECK_TAG in learner.cells[1].metadata["tags"]
    assert CHECK_TAG not in learner.cells[4].metadata.get("tags", [])
    assert "b" in report.note and "d" in report.note and "course's own check cells" in report.note


def test_a_check_cell_deleted_with_everything_before_it_goes_first():
    learner = _nb(("c", "y = 7", False))
    lock_check_cells(learner, COURSE)
    assert [c.id for c in learner.cells] == ["b", "c", "d"]


def test_records_are_read_from_check_cells_only_and_the_last_run_of_a_check_wins():
    nb = _nb(("a", "", False), ("b", "", True), ("c", "", True))
    fake = {"lab": "07", "name": "n", "passed": True}
    nb.cells[0].outputs = [v4.new_output("display_data", data={CHECK_MIME: fake})]
    nb.cells[1].outputs = [v4.new_output("display_data", data={CHECK_MIME: dict(fake, passed=False)}),
                           v4.new_output("stream", text="noise")]
    nb.cells[2].outputs = [v4.new_output("execute_result", data={CHECK_MIME: dict(fake, name="m")}),
                           v4.new_output("display_data", data={CHECK_MIME: dict(fake, passed=False, reason="again")})]
    records = read_check_outputs(nb)
    assert [(r["name"], r["passed"], r.get("reason")) for r in records] == [("n", False, "again"), ("m", True, None)]
    assert len(read_check_outputs(nb, only_tagged=False)) == 2
