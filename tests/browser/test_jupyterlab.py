"""A learner's view of the course in JupyterLab: the lab 00 quiz in real headless Chromium.

A notebook with ``import hadrlab`` and ``hadrlab.load_quiz("00").show()`` is opened through
the course's own ``hadrlab lab`` command, run from the Run menu, and answered by clicking,
as a learner would.
"""

from __future__ import annotations

import re

import nbformat
import pytest

import hadrlab

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

NOTEBOOK = "quiz00.ipynb"
TIMEOUT_MS = 60_000  # one wait on a loaded 2-core machine; a normal run takes 1-3 s


def _write_quiz_notebook(path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import hadrlab"),
        nbformat.v4.new_code_cell('hadrlab.load_quiz("00").show()'),
    ]
    # Without a kernelspec JupyterLab asks which kernel to start.
    nb.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python",
    }
    nbformat.write(nb, str(path))


@pytest.fixture(scope="module")
def quiz_page(lab, lab_server, browser_context, browser_tool):
    """The quiz notebook open in Chromium, every cell run through the Run menu."""
    _base_url, _token, root = lab_server
    _write_quiz_notebook(root / NOTEBOOK)
    page = browser_context.new_page()
    try:
        browser_tool.open_notebook(page, lab, NOTEBOOK, timeout_s=90)
        browser_tool.run_all_cells(page, timeout_s=90)
        yield page
    finally:
        page.close()


def _first_single_choice():
    return next(q for q in hadrlab.load_quiz("00") if q.type == "single")


def test_checking_a_single_choice_answer_shows_verdict_and_explanation(quiz_page, tmp_path):
    from playwright.sync_api import expect

    question = _first_single_choice()
    quiz_page.wait_for_selector(".hadrlab-quiz .hadrlab-quiz-question", timeout=TIMEOUT_MS)
    box = quiz_page.locator(".hadrlab-quiz-question").filter(
        has=quiz_page.locator(".widget-radio-box")
    ).first
    expect(box).to_contain_text(question.prompt.split()[0], timeout=TIMEOUT_MS)
    feedback = box.locator(".hadrlab-quiz-feedback .widget-html-content")
    expect(feedback).to_have_text("")
    score = quiz_page.locator(".hadrlab-quiz-score .widget-html-content")
    expect(score).to_contain_text("Score: 0/")

    # A wrong answer first: the feedback says so and names the right one.
    wrong = next(i for i in range(len(question.options)) if i != question.answer)
    box.locator(".widget-radio-box label", has_text=question.format_option(wrong)).click()
    box.locator("button.widget-button").click()
    expect(feedback).to_contain_text("Incorrect.", timeout=TIMEOUT_MS)
    expect(feedback).to_contain_text(question.format_option(question.answer)[:40])
    first_words = " ".join(question.explanation.split()[:6])
    expect(feedback).to_contain_text(first_words)

    # Then the right one: the verdict flips and the score counts it.
    box.locator(".widget-radio-box label", has_text=question.format_option(question.answer)).click()
    box.locator("button.widget-button").click()
    expect(feedback).to_contain_text("Correct.", timeout=TIMEOUT_MS)
    expect(feedback).not_to_contain_text("Incorrect")
    expect(feedback).to_contain_text(first_words)
    expect(score).to_contain_text(re.compile(r"Score: 1/\d+"), timeout=TIMEOUT_MS)

    quiz_page.screenshot(path=str(tmp_path / "quiz-page.png"))
    box.screenshot(path=str(tmp_path / "quiz-first-question.png"))
    assert (tmp_path / "quiz-first-question.png").stat().st_size > 1000


def test_running_the_quiz_notebook_shows_no_error_output(quiz_page):
    # Both cells ran (numbered prompts), so an empty error list below means something.
    prompts = quiz_page.locator(".jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
    assert [p.strip() for p in prompts] == ["[1]:", "[2]:"], prompts
    stderr = quiz_page.locator(
        '.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'
    ).all_inner_texts()
    tracebacks = [text for text in stderr if "Traceback" in text]
    assert not tracebacks, "the quiz notebook printed errors:\n" + "\n---\n".join(tracebacks)
    outputs = quiz_page.locator(".jp-OutputArea-output").all_inner_texts()
    assert not [o for o in outputs if "Error displaying widget" in o or "Failed to" in o]
