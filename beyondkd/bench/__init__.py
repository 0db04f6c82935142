"""Reproduction harness: suites of runs behind the papers' tables, their tables and plots.

* :mod:`beyondkd.bench.suite`: the suite YAML (``beyondkd/configs/bench/<name>.yaml``).
* :mod:`beyondkd.bench.runner`: plan the runs, validate every config, train what is missing.
* :mod:`beyondkd.bench.tables`: mean ± std of best/last accuracy from the run folders.
* :mod:`beyondkd.bench.report` / :mod:`beyondkd.bench.plots`: curves from ``metrics.jsonl``.
"""

from beyondkd.bench.runner import Plan, execute_plan, missing_configs, plan_suite
from beyondkd.bench.suite import Suite, load_suite, parse_suite, suite_names
from beyondkd.bench.tables import aggregate, build_table, read_run, render_markdown, write_table

__all__ = [
    "Plan", "Suite", "aggregate", "build_table", "execute_plan", "load_suite", "missing_configs", "parse_suite",
    "plan_suite", "read_run", "render_markdown", "suite_names", "write_table",
]
