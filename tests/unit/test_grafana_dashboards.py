"""The Grafana dashboards for the cluster path: well-formed JSON a Grafana would provision."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "infra" / "grafana" / "dashboards").glob("*.json"))


def dashboard_queries(path: Path) -> list[str]:
    return [t["expr"] for p in json.loads(path.read_text())["panels"] for t in p["targets"]]


def test_there_are_dashboards():
    assert DASHBOARDS, "no dashboard under infra/grafana/dashboards/"


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_structure(path):
    dash = json.loads(path.read_text())
    assert dash["uid"] and dash["title"] and isinstance(dash["schemaVersion"], int)
    assert any(v["type"] == "datasource" and v["query"] == "prometheus" for v in dash["templating"]["list"])
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), f"duplicate panel ids in {path.name}"
    cells = set()
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert {"h", "w", "x", "y"} <= set(grid) and 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        assert (grid["x"], grid["y"]) not in cells, f"two panels at the same place: {panel['title']}"
        cells.add((grid["x"], grid["y"]))
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}"
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and all(t["expr"].strip() for t in panel["targets"])
