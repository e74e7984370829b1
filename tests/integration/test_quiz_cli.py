"""The terminal quiz, driven end to end in a child Python with answers on stdin."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
IDS = "rto-vs-rpo,downtime-9995,active-active-vs-passive"


def run_quiz(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    code = f"import sys; from hadrlab.quiz import main_quiz; sys.exit(main_quiz({args!r}))"
    return subprocess.run(
        [sys.executable, "-c", code],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )


def test_right_answers_score_full_marks() -> None:
    done = run_quiz(["00", "--ids", IDS], "b\n21.6 min\na,c,e\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("Correct.") == 3
    assert done.stdout.rstrip().endswith("Score: 3/3 (3 of 3 answered)")


def test_wrong_answers_show_the_right_one_and_the_explanation() -> None:
    done = run_quiz(["00", "--ids", IDS], "a\n1296 s\na,c\n")
    assert done.returncode == 0, done.stderr
    assert "Incorrect. The answer is b) RPO is about 2 seconds" in done.stdout
    assert "Why: A 30-day month has 30 x 24 x 60 = 43,200 minutes." in done.stdout
    assert done.stdout.rstrip().endswith("Score: 1/3 (3 of 3 answered)")


def test_an_invalid_answer_is_asked_again() -> None:
    done = run_quiz(["00", "--ids", "rto-vs-rpo"], "z\n7\nB\n")
    assert "'z' is not an option: type a letter (a to d) or a number (1 to 4)." in done.stdout
    assert "'7' is not an option" in done.stdout
    assert done.stdout.rstrip().endswith("Score: 1/1 (1 of 1 answered)")


def test_end_of_input_stops_with_the_score_so_far() -> None:
    done = run_quiz(["00", "--ids", IDS], "b\n")
    assert done.returncode == 0, done.stderr
    assert "Input ended: stopping the drill here." in done.stdout
    assert done.stdout.rstrip().endswith("Score: 1/3 (1 of 3 answered)")


def test_free_text_is_self_assessed_against_the_rubric() -> None:
    answer = "Keep the registry off the serving path.\nCache the last good model.\n\n4\n"
    done = run_quiz(["interview", "--ids", "model-registry-outage"], answer)
    assert done.returncode == 0, done.stderr
    assert "Model answer:" in done.stdout and "Rubric:" in done.stdout
    assert "Self-assessed: 4 of 5 rubric points." in done.stdout
    assert done.stdout.rstrip().endswith("Score: 0.8/1 (1 of 1 answered)")


def test_a_seeded_shuffle_repeats_the_same_order() -> None:
    first = run_quiz(["01", "--shuffle", "--seed", "7"], "")
    second = run_quiz(["01", "--shuffle", "--seed", "7"], "")
    other = run_quiz(["01", "--shuffle", "--seed", "8"], "")
    assert first.returncode == 0, first.stderr
    assert "Shuffled with --seed 7." in first.stdout
    assert first.stdout == second.stdout
    assert first.stdout.replace("seed 7", "seed 8") != other.stdout
    assert first.stdout.rstrip().endswith("Score: 0/9 (0 of 9 answered)")


def test_a_path_to_a_bank_works_and_an_unknown_bank_fails() -> None:
    done = run_quiz([str(ROOT / "quizzes" / "lab04.yaml"), "--ids", "dns-failover-time"], "90\n")
    assert done.stdout.rstrip().endswith("Score: 1/1 (1 of 1 answered)")
    missing = run_quiz(["lab42"], "")
    assert missing.returncode == 2
    assert "There is no quiz bank 'lab42'" in missing.stderr
