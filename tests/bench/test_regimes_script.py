"""benchmarks/regimes.py builds its tables and verdict from run folders (here: fake ones)."""

from __future__ import annotations

from pathlib import Path

from benchmarks.regimes import SUITES, evidence_markdown
from beyondkd.bench.runner import plan_suite
from beyondkd.bench.suite import load_suite
from beyondkd.bench.tables import build_table
from tests.bench.helpers import write_run


def test_the_regime_suites_plan_and_the_verdict_follows_the_rule(tmp_path):
    tables = []
    for name in SUITES:
        plan = plan_suite(load_suite(name), tmp_path / name)
        g = plan.groups[0]
        for row in g.rows:
            # KD rows at 80; eliminate-only +0.5 above with tiny spread; paper 1 point below
            base = {"KD": 80.0, "KD (CE 0.5 / KD 0.5)": 80.0}.get(row.spec.label, 80.0)
            shift = 0.5 if row.bias_label == "eliminate-only" else -1.0 if row.bias_label == "paper" else 0.0
            for i, run in enumerate(row.runs):
                write_run(run.output_dir, [base + shift - 1, base + shift + 0.01 * i], config=None)
        tables.append(build_table(plan))
    text = evidence_markdown(tables, Path(__file__).resolve().parents[2] / "benchmarks" / "figures" / "regime-gain.png")
    rule = next(line for line in text.splitlines() if line.startswith("Rule (issue 12)"))
    assert "**eliminate-only** (mean Δ +0.50, wins 6, losses 0)" in rule  # 3 regimes x 2 weightings; both rows over seeds 0-4
    paper = next(line for line in text.splitlines() if line.startswith("| paper |")).split("|")
    assert paper[2].strip() == "-1.01" and paper[-2].strip() == "6"  # paper loses everywhere here
