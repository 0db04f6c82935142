"""The listing commands fit the terminal (80 and 120 columns) and offer --json for scripts."""

from __future__ import annotations

import json
import re

import pytest

from beyondkd.cli.main import main

LISTINGS = {
    "models": ["models", "--no-flops"],
    "methods": ["methods"],
    "datasets": ["datasets"],
    "presets": ["presets"],
}


def _names(command: str) -> list[str]:
    if command == "models":
        from beyondkd.models import model_names

        return list(model_names())
    if command == "methods":
        from beyondkd.distillers import method_names

        return list(method_names())
    if command == "datasets":
        from beyondkd.data import dataset_names

        return list(dataset_names())
    from beyondkd.bias import BIAS_PRESETS

    return list(BIAS_PRESETS)


@pytest.mark.parametrize("columns", [80, 120])
@pytest.mark.parametrize("command", sorted(LISTINGS))
def test_listing_fits_the_terminal_width_and_shows_every_name_whole(command, columns, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))
    assert main(LISTINGS[command]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines and max(len(line) for line in lines) <= columns, max(lines, key=len)
    first_cells = {m.group(1) for line in lines if (m := re.match(r"^\W*?([\w.-]+)", line))}
    assert set(_names(command)) <= first_cells, first_cells


@pytest.mark.parametrize("command", sorted(LISTINGS))
def test_listing_json_is_one_record_per_name(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")  # JSON ignores the terminal
    assert main([*LISTINGS[command], "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in records] == _names(command)
    if command == "methods":
        kd = next(r for r in records if r["name"] == "kd")
        assert kd["bias_plugin"] is True and "temperature" in kd["params"]
    if command == "models":
        assert all(isinstance(r["params"], int) and r["params"] > 0 for r in records)
    if command == "presets":
        assert sum(r["default"] for r in records) == 1 and all(isinstance(r["settings"], dict) for r in records)
