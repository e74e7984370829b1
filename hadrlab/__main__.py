"""Command line: ``python -m hadrlab COMMAND`` (also installed as ``hadrlab``).

Commands:
    lab         open JupyterLab on labs/ (127.0.0.1, a token, the URL printed)
    grade       execute learner notebooks headless and report each check (for instructors)
    quiz        run a quiz bank in the terminal (interview drills)
    quizzes     validate every quiz bank
    labs        regenerate labs/ from solutions/ (--check: fail if out of date)
    solutions   re-execute solution notebooks in place to refresh their outputs
    stop        stop every process a lab, test or command left running
    leftovers   list processes that outlived what started them (exit 1 if any)
    doctor      say what is installed and what is missing (--install-redis to fix Redis)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _stop(argv: list[str]) -> int:
    from hadrlab.processes import stop_registered

    stopped = stop_registered()
    if not stopped:
        print("Nothing to stop: no process started by the labs is running.")
    for entry in stopped:
        cmd = entry.get("cmd") or ""
        cmd = " ".join(cmd) if isinstance(cmd, list) else cmd
        print(f"stopped pid {entry['pid']}: {entry.get('name') or cmd[:80]}")
    return 0


def _leftovers(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="hadrlab leftovers")
    parser.add_argument(
        "--all", action="store_true", help="include test sessions' homes under .hadrlab/"
    )
    args = parser.parse_args(argv)
    from hadrlab.processes import list_leftovers

    left = list_leftovers(all_homes=args.all)
    if not left:
        print("No leftover processes.")
        return 0
    print("These processes outlived the lab, test or command that started them:")
    for entry in left:
        name = f"{entry['name']}, " if entry.get("name") else ""
        gone = f" (its owner, pid {entry['owner_gone']}, is gone)" if entry.get("owner_gone") else ""
        print(f"  pid {entry['pid']}: {name}{entry['cmd'][:140]}{gone}")
    print("Run `make stop` to stop them.")
    return 1


def _lazy(module: str, func: str) -> Callable[[list[str]], int]:
    def run(argv: list[str]) -> int:
        import importlib

        return getattr(importlib.import_module(module), func)(argv)

    return run


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "lab": _lazy("hadrlab.jupyter", "main_lab"),
    "grade": _lazy("hadrlab.grading", "main_grade"),
    "quiz": _lazy("hadrlab.quiz", "main_quiz"),
    "quizzes": _lazy("hadrlab.quiz", "main_validate"),
    "labs": _lazy("hadrlab.notebooks", "main_labs"),
    "solutions": _lazy("hadrlab.notebooks", "main_solutions"),
    "stop": _stop,
    "leftovers": _leftovers,
    "doctor": _lazy("hadrlab.doctor", "main_doctor"),
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in {"-h", "--help", "help"}:
        print(__doc__)
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"Unknown command {command!r}. Commands: {', '.join(COMMANDS)}. "
            f"`python -m hadrlab --help` explains each.",
            file=sys.stderr,
        )
        return 2
    try:
        return COMMANDS[command](rest)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
