"""Quiz banks: schema validation, scoring, answer types, terminal parsing and the widget tree."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hadrlab.errors import QuizError
from hadrlab.quiz import Quiz, find_bank, list_banks, load_quiz, main_quiz, main_validate

ROOT = Path(__file__).resolve().parents[2]
BANKS = sorted((ROOT / "quizzes").glob("*.yaml"))
LAB_BANKS = ["lab00", "lab01", "lab02", "lab03", "lab04"]


def write_bank(tmp_path: Path, body: str, name: str = "bank.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


GOOD_NUMERIC = """
    title: Test bank
    questions:
      - id: budget-9995
        type: numeric
        prompt: How many minutes?
        explanation: Because.
        answer: 21.6
        tolerance: {tolerance}
        unit: min
"""


def small_quiz(tmp_path: Path) -> Quiz:
    path = write_bank(tmp_path, """
        title: Small
        questions:
          - id: one
            type: single
            prompt: Pick b.
            explanation: b is right.
            options: [alpha, beta, gamma]
            answer: b
          - id: many
            type: multiple
            prompt: Pick a and c.
            explanation: a and c are right.
            options: [alpha, beta, gamma, delta]
            answer: [a, c]
          - id: num
            type: numeric
            prompt: How many minutes?
            explanation: 21.6 minutes.
            answer: 21.6
            tolerance: 0.1
            unit: min
          - id: essay
            type: text
            prompt: Explain.
            explanation: Structure matters.
            model_answer: A model answer.
            rubric: [first, second, third, fourth, fifth]
    """)
    return load_quiz(path)


# -- the banks shipped with the course ----------------------------------------------------------


def test_the_course_ships_every_bank() -> None:
    assert {p.stem for p in BANKS} >= set(LAB_BANKS) | {"interview"}


@pytest.mark.parametrize("path", BANKS, ids=[p.stem for p in BANKS])
def test_every_bank_validates(path: Path) -> None:
    quiz = load_quiz(path)
    assert len(quiz) >= 6
    assert all(q.explanation and q.prompt for q in quiz)


def test_lab_banks_are_found_by_lab_id() -> None:
    for number, stem in enumerate(LAB_BANKS):
        assert find_bank(f"{number:02d}").stem == stem
    assert find_bank("interview").name == "interview.yaml"
    assert load_quiz("00").path.name == "lab00.yaml"


def test_interview_bank_has_the_required_free_text_questions() -> None:
    quiz = load_quiz("interview")
    assert sum(q.type == "text" for q in quiz) >= 6
    design = quiz.question("design-ha-dr-ai-service")
    assert "stateless model servers" in design.prompt
    assert "feature store" in design.prompt
    assert "RPO" in design.model_answer and "drill" in design.model_answer.lower()
    incident = " ".join(quiz.question("ml-incident-star").model_answer.split())
    assert "batch to streaming" in incident
    assert "data contract" in incident and "canary" in incident


def test_lab00_downtime_question_uses_a_30_day_month() -> None:
    quiz = load_quiz("00")
    assert quiz.answer("downtime-9995", 21.6).correct is True
    assert quiz.answer("downtime-9995", 21.9).correct is False


def test_main_validate_prints_one_ok_line_per_bank(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_validate([]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(list_banks())
    assert all(line.startswith("OK ") for line in lines)


def test_main_validate_fails_a_malformed_bank(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = write_bank(tmp_path, GOOD_NUMERIC.format(tolerance="abc"), "bad.yaml")
    assert main_validate([str(bad), "00"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "tolerance" in out
    assert "OK   quizzes/lab00.yaml" in out


# -- validation errors name the file, the question id and the field ----------------------------


def test_a_bad_tolerance_names_file_question_and_field(tmp_path: Path) -> None:
    path = write_bank(tmp_path, GOOD_NUMERIC.format(tolerance="abc"), "lab99.yaml")
    with pytest.raises(QuizError) as info:
        load_quiz(path)
    message = str(info.value)
    assert "lab99.yaml, question 'budget-9995': field 'tolerance' must be a number, got 'abc'" in message


def test_the_same_bank_with_a_numeric_tolerance_loads(tmp_path: Path) -> None:
    path = write_bank(tmp_path, GOOD_NUMERIC.format(tolerance="0.1"))
    assert load_quiz(path).question("budget-9995").tolerance == 0.1


def test_duplicate_ids_are_refused(tmp_path: Path) -> None:
    body = GOOD_NUMERIC.format(tolerance="0.1")
    body += textwrap.indent(textwrap.dedent("""
        - id: budget-9995
          type: text
          prompt: Again?
          explanation: Duplicate.
          model_answer: x
          rubric: [y]
    """), "      ")
    path = write_bank(tmp_path, body)
    with pytest.raises(QuizError, match=r"question 'budget-9995': field 'id' duplicates"):
        load_quiz(path)


def test_a_choice_answer_not_among_the_options_is_refused(tmp_path: Path) -> None:
    path = write_bank(tmp_path, """
        title: T
        questions:
          - id: pick
            type: single
            prompt: P
            explanation: E
            options: [x, y, z]
            answer: e
    """)
    with pytest.raises(QuizError) as info:
        load_quiz(path)
    assert "question 'pick': field 'answer' is 'e', which is not among the options (a to c)" in str(info.value)


def test_unknown_fields_are_refused_with_the_allowed_list(tmp_path: Path) -> None:
    path = write_bank(tmp_path, """
        title: T
        questions:
          - id: pick
            type: single
            prompt: P
            explanation: E
            options: [x, y]
            answer: a
            hint: not a field
    """)
    with pytest.raises(QuizError) as info:
        load_quiz(path)
    message = str(info.value)
    assert "question 'pick': unknown field 'hint'" in message
    assert "allowed fields for a single-choice question: id, type, prompt, explanation, tags, options, answer" in message


def test_every_problem_of_a_bank_is_reported_at_once(tmp_path: Path) -> None:
    path = write_bank(tmp_path, """
        title: T
        questions:
          - id: Bad Id
            type: single
            prompt: P
            explanation: E
            options: [x, y]
            answer: a
          - id: no-type
            prompt: P
            explanation: E
          - id: no-rubric
            type: text
            prompt: P
            explanation: E
            model_answer: M
          - id: list-for-single
            type: single
            prompt: P
            explanation: E
            options: [x, y]
            answer: [a, b]
    """)
    with pytest.raises(QuizError) as info:
        load_quiz(path)
    problems = info.value.problems
    assert len(problems) == 4
    assert "question #1: field 'id' must use lower-case letters" in problems[0]
    assert "question 'no-type': field 'type' is missing" in problems[1]
    assert "question 'no-rubric': field 'rubric' is missing" in problems[2]
    assert "question 'list-for-single': field 'answer' must be one letter" in problems[3]


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write_bank(tmp_path, "title: T\nquestions:\n  - id: a\n   type: single\n")
    with pytest.raises(QuizError, match=r"bank\.yaml: the file is not valid YAML at line \d+"):
        load_quiz(path)


def test_an_unknown_bank_lists_the_known_ones() -> None:
    with pytest.raises(QuizError) as info:
        load_quiz("lab42")
    assert "no quiz bank 'lab42'" in str(info.value)
    assert "interview" in str(info.value)


# -- scoring ------------------------------------------------------------------------------------


def test_single_choice_accepts_letter_index_or_option_text(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    assert quiz.answer("one", "b").correct is True
    assert quiz.answer("one", "B").correct is True
    assert quiz.answer("one", 1).correct is True
    assert quiz.answer("one", "beta").correct is True
    wrong = quiz.answer("one", 0)
    assert (wrong.correct, wrong.score) == (False, 0.0)
    assert wrong.expected == "b) beta"
    assert wrong.explanation == "b is right."


def test_multiple_choice_needs_exactly_the_right_set(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    assert quiz.answer("many", ["c", "a"]).correct is True
    assert quiz.answer("many", [0, 2]).correct is True
    assert quiz.answer("many", ["a"]).correct is False
    assert quiz.answer("many", ["a", "b", "c"]).correct is False
    assert quiz.answer("many", []).correct is False


def test_numeric_answers_are_correct_within_the_tolerance(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    assert quiz.answer("num", 21.6).correct is True
    assert quiz.answer("num", 21.7).correct is True
    assert quiz.answer("num", 21).correct is False
    assert quiz.answer("num", 21.75).correct is False


def test_free_text_is_scored_by_self_assessment(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    result = quiz.answer("essay", "my answer")
    assert result.correct is None and result.score == 0.0
    assert result.model_answer == "A model answer." and len(result.rubric) == 5
    assessed = quiz.self_assess("essay", 3)
    assert assessed.score == pytest.approx(0.6)
    assert "3 of 5 rubric points" in assessed.verdict
    with pytest.raises(QuizError, match="from 0 to 5, got 6"):
        quiz.self_assess("essay", 6)
    with pytest.raises(QuizError, match="only for free-text"):
        quiz.self_assess("one", 1)


def test_the_score_counts_the_latest_answer_per_question(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    quiz.answer("one", "a")
    quiz.answer("one", "b")
    quiz.answer("num", 21.6)
    quiz.self_assess("essay", 5)
    score = quiz.score()
    assert (score.points, score.total, score.answered) == (3.0, 4, 3)
    assert str(score) == "Score: 3/4 (3 of 4 answered)"
    quiz.reset()
    assert quiz.score().points == 0


def test_shuffling_moves_options_but_keeps_the_right_one(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    original = quiz.question("many")
    right = {original.options[i] for i in original.answer}
    for seed in range(5):
        shuffled = quiz.shuffled(seed)
        assert sorted(shuffled.ids) == sorted(quiz.ids)
        q = shuffled.question("many")
        assert {q.options[i] for i in q.answer} == right
    assert quiz.shuffled(3).ids == quiz.shuffled(3).ids


# -- answers of the wrong type ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("qid", "answer", "expected"),
    [
        ("num", "21.6", r"numeric question: the answer must be a number \(int or float\) in min, got str '21.6'"),
        ("num", True, r"must be a number"),
        ("num", float("nan"), r"finite number"),
        ("one", 3, r"has 3 options: an option index must be from 0 to 2"),
        ("one", ["b"], r"single-choice question: .* got list \['b'\]\. Only one option is right"),
        ("one", "epsilon", r"'epsilon' is not one of its options"),
        ("one", True, r"single-choice question"),
        ("many", "a", r"multiple-choice question: the answer must be a list of options"),
        ("many", ["a", "z"], r"'z' is not one of its options"),
        ("essay", 42, r"free-text question: the answer must be a string, got int 42"),
        ("nope", "a", r"no question 'nope'.*one, many, num, essay"),
    ],
)
def test_a_wrong_answer_type_says_what_is_expected(tmp_path: Path, qid: str, answer: object, expected: str) -> None:
    quiz = small_quiz(tmp_path)
    with pytest.raises(QuizError, match=expected):
        quiz.answer(qid, answer)
    assert quiz.score().answered == 0


# -- what a learner types in the terminal -------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "value"),
    [("21.6", 21.6), ("21.6 min", 21.6), ("21.6minutes", 21.6), ("1296 s", 21.6), ("0.36 h", 21.6)],
)
def test_typed_numbers_may_carry_a_time_unit(tmp_path: Path, typed: str, value: float) -> None:
    assert small_quiz(tmp_path).question("num").parse_typed(typed) == pytest.approx(value)


def test_typed_answers_are_parsed_or_refused_clearly(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    assert quiz.question("one").parse_typed(" B ") == 1
    assert quiz.question("one").parse_typed("2") == 1
    assert quiz.question("many").parse_typed("a, c") == [0, 2]
    assert quiz.question("many").parse_typed("1 3") == [0, 2]
    assert quiz.question("many").parse_typed("ac") == [0, 2]
    with pytest.raises(QuizError, match=r"'4' is not an option: type a letter \(a to c\) or a number \(1 to 3\)"):
        quiz.question("one").parse_typed("4")
    with pytest.raises(QuizError, match="expects a number in min"):
        quiz.question("num").parse_typed("21.6 GB")
    with pytest.raises(QuizError, match="is not a number"):
        quiz.question("num").parse_typed("twenty")


def test_main_quiz_stops_cleanly_at_end_of_input(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("c\n"))
    assert main_quiz(["00", "--ids", "sli-slo-sla,downtime-9995"]) == 0
    out = capsys.readouterr().out
    assert "Correct." in out
    assert "Input ended" in out
    assert out.rstrip().endswith("Score: 1/2 (1 of 2 answered)")


def test_a_free_text_answer_cut_off_by_end_of_input_is_not_answered(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Input that ends before the self-assessment leaves the question unanswered, not 0."""
    bank = load_quiz("interview")
    first = bank.questions[0]
    # the first answer covers every rubric point; the second ends before its self-assessment
    typed = f"Stateless replicas behind a balancer.\n\n{len(first.rubric)}\n"
    typed += "Roll back the feature pipeline.\n\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(typed))
    assert main_quiz(["interview"]) == 0
    out = capsys.readouterr().out
    total = len(bank)
    assert out.rstrip().endswith(f"Score: 1/{total} (1 of {total} answered)")
    not_answered = ", ".join(q.id for q in bank.questions[1:])
    assert f"Not answered ({total - 1}): {not_answered}." in " ".join(out.split())


def test_main_quiz_reports_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main_quiz(["00", "--ids", "no-such-question"]) == 2
    assert "no question 'no-such-question'" in capsys.readouterr().err
    assert main_quiz(["00", "--seed", "3"]) == 2
    assert "--seed only applies with --shuffle" in capsys.readouterr().err


# -- widgets ------------------------------------------------------------------------------------


def question_boxes(root):
    return [box for box in root.children if "hadrlab-quiz-question" in box._dom_classes]


def enter_answer(question, box, right: bool) -> None:
    """Put the right (or a wrong) answer into a question's input widget."""
    entry = box.children[1]
    if question.type == "single":
        index = question.answer if right else (question.answer + 1) % len(question.options)
        entry.value = index
    elif question.type == "multiple":
        chosen = question.answer if right else set(range(len(question.options))) - question.answer
        for i, checkbox in enumerate(entry.children):
            checkbox.value = i in chosen
    elif question.type == "numeric":
        number = question.answer if right else question.answer + 10 * question.tolerance + 1
        entry.children[0].value = f"{number:g}"
    else:
        entry.value = "my answer"


@pytest.mark.parametrize("path", BANKS, ids=[p.stem for p in BANKS])
def test_every_bank_builds_widgets_that_give_feedback(path: Path) -> None:
    import ipywidgets

    quiz = load_quiz(path)
    root = quiz.build_widget()
    boxes = question_boxes(root)
    assert len(boxes) == len(quiz)
    score = root.children[-1]
    for question, box in zip(quiz.questions, boxes):
        prompt, entry, button, feedback = box.children[:4]
        assert isinstance(button, ipywidgets.Button)
        assert isinstance(feedback, ipywidgets.HTML)
        expected_entry = {
            "single": ipywidgets.RadioButtons,
            "multiple": ipywidgets.VBox,
            "numeric": ipywidgets.HBox,
            "text": ipywidgets.Textarea,
        }[question.type]
        assert isinstance(entry, expected_entry)
        enter_answer(question, box, right=True)
        button.click()
        if question.type == "text":
            assert "Model answer." in feedback.value and "Rubric" in feedback.value
        else:
            assert "Correct." in feedback.value and "Incorrect" not in feedback.value
    scored = sum(q.type != "text" for q in quiz)
    assert f"Score: {scored}/{len(quiz)}" in score.value
    assert f"({len(quiz)} of {len(quiz)} answered)" in score.value


@pytest.mark.parametrize("bank", LAB_BANKS)
def test_a_wrong_answer_in_the_widget_says_incorrect(bank: str) -> None:
    quiz = load_quiz(bank)
    root = quiz.build_widget()
    for question, box in zip(quiz.questions, question_boxes(root)):
        enter_answer(question, box, right=False)
        box.children[2].click()
        assert "Incorrect." in box.children[3].value
        assert "The answer is" in box.children[3].value
    assert f"Score: 0/{len(quiz)}" in root.children[-1].value


def test_an_unanswered_radio_question_asks_for_a_choice(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    box = question_boxes(quiz.build_widget())[0]
    box.children[2].click()
    assert "Choose an option" in box.children[3].value
    assert quiz.score().answered == 0


def test_an_untouched_number_box_asks_for_a_number_and_scores_nothing(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    box = question_boxes(quiz.build_widget())[2]
    number_box, check, feedback = box.children[1].children[0], box.children[2], box.children[3]
    assert number_box.value == ""
    check.click()
    assert "Type a number in min, then press Check." in feedback.value
    assert "Incorrect" not in feedback.value
    assert quiz.score().answered == 0


def test_a_typed_zero_in_the_number_box_is_scored(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    box = question_boxes(quiz.build_widget())[2]
    number_box, check, feedback = box.children[1].children[0], box.children[2], box.children[3]
    number_box.value = "0"
    check.click()
    assert "Incorrect." in feedback.value
    assert quiz.results["num"].given == "0 min"
    number_box.value = "1296 s"  # a time unit converts, as in the terminal
    check.click()
    assert "Correct." in feedback.value and quiz.score().points == 1
    number_box.value = "soon"
    check.click()
    assert "&#x27;soon&#x27; is not a number" in feedback.value
    assert quiz.score().points == 1  # the last valid answer stands


def test_ticking_rubric_points_updates_the_score(tmp_path: Path) -> None:
    quiz = small_quiz(tmp_path)
    root = quiz.build_widget()
    box = question_boxes(root)[3]
    rubric = box.children[4]
    assert rubric.layout.display == "none"
    box.children[2].click()
    assert rubric.layout.display == ""
    rubric.children[0].value = True
    rubric.children[2].value = True
    assert "Self-assessed: 2 of 5 rubric points." in box.children[3].value
    assert "Score: 0.4/4" in root.children[-1].value


def test_importing_the_quiz_module_does_not_import_ipywidgets() -> None:
    code = "import sys, hadrlab, hadrlab.quiz; print('ipywidgets' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
