"""``beyondkd bench``: run a named suite over seeds and print its paper-shaped table."""

from __future__ import annotations

import argparse

from beyondkd.errors import ConfigError


class _IntermixedParser(argparse.ArgumentParser):
    """Lets KEY=VALUE overrides follow options (``bench SUITE --seeds 0 train.epochs=1``)."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def _seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds '{text}' must be comma-separated integers, e.g. --seeds 0,1,2") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds '{text}' must list distinct integers, e.g. --seeds 0,1,2")
    return seeds


def _bench(args: argparse.Namespace) -> int:
    from beyondkd.bench.runner import describe_plan, execute_plan, plan_suite
    from beyondkd.bench.suite import load_suite, suite_names

    if args.list:
        for name in suite_names():
            suite = load_suite(name)
            print(f"{name:24} {suite.table:9} {suite.description}")
        return 0
    if not args.suite:
        raise ConfigError("name a suite: beyondkd bench <suite> (beyondkd bench --list shows them)")
    suite = load_suite(args.suite)
    plan = plan_suite(suite, args.out, _seeds(args.seeds) if args.seeds else None, args.overrides)
    if args.dry_run:
        print(describe_plan(plan))
        print("dry run: every config loaded and validated; nothing trained")
        return 0
    from beyondkd.bench.tables import render_markdown, write_table

    failures = []
    if not args.tables_only:
        print(describe_plan(plan), flush=True)
        failures = execute_plan(plan, log=lambda line: print(line, flush=True), jobs=args.jobs)
    from beyondkd.bench.report import suite_curves

    table, md, js = write_table(plan)
    curves = suite_curves(plan)
    print()
    print(render_markdown(table))
    print(f"tables: {md} and {js}" + (f"; curves: {', '.join(map(str, curves))}" if curves else ""))
    if failures:
        import sys

        for run, msg in failures:
            print(f"error: {run.group} / {run.label} seed {run.seed} failed: {msg}", file=sys.stderr)
        return 1
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run a benchmark suite over seeds and print its paper-shaped table")
    p.add_argument("suite", nargs="?", help="a packaged suite name (beyondkd bench --list) or a suite YAML path")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides for every run, e.g. train.device=cuda")
    p.add_argument("--list", action="store_true", help="list the packaged suites")
    p.add_argument("--seeds", help="comma-separated seeds (default: the suite's)")
    p.add_argument("--out", "-o", help="folder of the suite's runs and tables (default runs/bench/<suite>)")
    p.add_argument("--dry-run", action="store_true", help="validate every config and print the planned runs; train nothing")
    p.add_argument("--tables-only", action="store_true", help="train nothing; build the tables from the runs already there")
    p.add_argument("--jobs", "-j", type=int, default=1, help="student runs trained at once, each in its own process (default 1)")
    p.set_defaults(func=_bench)
    p.__class__ = _IntermixedParser
