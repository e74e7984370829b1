"""Run the benchmarks: ``make bench`` (``python -m bench [--only NAME ...]``).

Each module ``bench/bench_*.py`` defines functions named ``bench_*`` that return a list of
:class:`Figure`. Results are merged into ``bench/results.json`` (one entry per figure, with
when and where it was measured) and rendered as the table ``bench/results.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import operator
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OPS = {"<=": operator.le, ">=": operator.ge, "==": operator.eq}


@dataclass
class Figure:
    """One measured figure and its target (``target`` None: reported, no target)."""

    name: str
    value: float
    unit: str = ""
    target: float | None = None
    op: str = ">="
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.target is None or self.value is None:
            return None
        return OPS[self.op](self.value, self.target)


def _discover() -> dict[str, object]:
    found = {}
    for path in sorted(HERE.glob("bench_*.py")):
        module = importlib.import_module(f"bench.{path.stem}")
        for name in dir(module):
            if name.startswith("bench_") and callable(getattr(module, name)):
                found[name.removeprefix("bench_")] = getattr(module, name)
    return found


def _render(results: dict) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by `make bench`; each figure with the run that measured it.",
        "",
        "| figure | value | target | met | measured | note |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in sorted(results.items()):
        target = "" if r["target"] is None else f"{r['op']} {r['target']:g}"
        met = {True: "yes", False: "**no**", None: ""}[r["met"]]
        value = "n/a" if r["value"] is None else f"{r['value']:.4g} {r['unit']}".strip()
        lines.append(f"| `{name}` | {value} | {target} | {met} | {r['measured_at']} | {r['note']} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", nargs="*", default=None, help="benchmark names to run")
    parser.add_argument("--list", action="store_true", help="list the benchmarks")
    args = parser.parse_args(argv)
    benches = _discover()
    if args.list:
        print("\n".join(benches))
        return 0
    chosen = {k: v for k, v in benches.items() if not args.only or k in args.only}
    unknown = set(args.only or []) - set(benches)
    if unknown:
        print(f"Unknown benchmark(s) {sorted(unknown)}; known: {sorted(benches)}", file=sys.stderr)
        return 2
    path = HERE / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    stamp = time.strftime("%Y-%m-%d %H:%M")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    missed = []
    for name, func in chosen.items():
        print(f"== {name} ...", flush=True)
        started = time.monotonic()
        for fig in func():
            entry = {**asdict(fig), "met": fig.met, "measured_at": stamp, "machine": machine}
            results[fig.name] = entry
            target = "" if fig.target is None else f" (target {fig.op} {fig.target:g})"
            verdict = {True: "met", False: "NOT MET", None: ""}[fig.met]
            value = "n/a" if fig.value is None else f"{fig.value:.4g} {fig.unit}".strip()
            print(f"   {fig.name} = {value}{target} {verdict}".rstrip())
            if fig.met is False:
                missed.append(fig.name)
        print(f"   ({time.monotonic() - started:.0f} s)")
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    (HERE / "results.md").write_text(_render(results))
    print(f"Wrote {path.relative_to(HERE.parent)} and bench/results.md")
    if missed:
        print(f"Targets not met: {', '.join(missed)} (see the README's benchmark section).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
