"""The project's own files agree with each other: pins, commands, CI."""

from __future__ import annotations

import re
import subprocess
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
# PyPI name -> conda-forge name, where they differ.
CONDA_NAMES = {"redis": "redis-py", "kubernetes": "python-kubernetes"}


def _name(req: str) -> str:
    return re.split(r"[<>=!\[ ;]", req, maxsplit=1)[0].strip().lower()


def test_environment_yml_has_every_dependency_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["dev"]}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = set(), set()
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip |= {_name(p) for p in dep["pip"]}
        else:
            conda.add(_name(dep))
    # The pip section installs the checkout with its dev extra, which covers the rest.
    assert "-e .[dev]" in [p for d in env["dependencies"] if isinstance(d, dict) for p in d["pip"]]
    missing = {n for n in wanted if CONDA_NAMES.get(n, n) not in conda and n not in pip}
    assert missing <= {"playwright", "ipykernel"}, f"not in environment.yml: {sorted(missing)}"


def test_make_help_is_the_default_and_lists_the_two_commands():
    out = subprocess.run(["make", "-s"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "make lab" in out and "make test" in out and "make stop" in out


def test_ci_runs_make_test():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test$", ci, re.M)


def test_readme_first_screen_has_the_two_commands():
    first_screen = "\n".join((ROOT / "README.md").read_text().splitlines()[:15])
    assert "make lab" in first_screen and "make test" in first_screen


def test_importing_hadrlab_starts_nothing_and_imports_no_heavy_module():
    code = (
        "import sys, hadrlab; "
        "heavy = [m for m in ('locust', 'gevent', 'matplotlib', 'ipywidgets', 'redis', 'fastapi') "
        "if m in sys.modules]; "
        "import threading; assert threading.active_count() == 1; print(heavy)"
    )
    out = subprocess.run(
        [__import__("sys").executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[]"


def test_every_exported_name_resolves():
    import hadrlab

    for name in hadrlab.__all__:
        assert getattr(hadrlab, name) is not None, name


def test_readme_documents_the_local_backend_subset_as_the_code_does():
    from hadrlab.platform.manifests import SUPPORTED_FIELDS_DOC

    assert SUPPORTED_FIELDS_DOC.strip() in (ROOT / "README.md").read_text()
