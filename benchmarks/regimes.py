"""When does the bias plug-in help? The three Fashion-MNIST regime suites, their tables, the gain
plot and the default preset they imply, written into BENCHMARKS.md.

The suites (``beyondkd/configs/bench/fmnist-regime-*.yaml``) run through ``beyondkd bench``'s
runner: (a) a teacher trained on the student's images, (b) a teacher trained on 10/20/30 % of
them, (c) a teacher with the student's own architecture. Finished runs are reused, so this can
be stopped and restarted; ``--tables-only`` trains nothing.

    python -m benchmarks.regimes --jobs 2 --write
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._report import ROOT, provenance, run_main, write_section
from beyondkd.bench.evidence import NOISE_SIGMAS, choose_default, comparisons, promotable, summarize
from beyondkd.bench.plots import plot_gain_vs_wrong_rows
from beyondkd.bench.runner import execute_plan, plan_suite
from beyondkd.bench.suite import load_suite
from beyondkd.bench.tables import build_table, render_markdown
from beyondkd.bias.config import default_bias_preset

SUITES = ("fmnist-regime-standard", "fmnist-regime-limited-teacher", "fmnist-regime-self")
FIGURE = ROOT / "benchmarks" / "figures" / "regime-gain.png"


def _fmt(x: float | None, signed: bool = True) -> str:
    return "—" if x is None else (f"{x:+.2f}" if signed else f"{x:.2f}")


def evidence_markdown(tables: list[dict], figure: Path) -> str:
    """The cross-regime summary: per setting, its Δ in every regime and weighting, and the verdict."""
    comps = comparisons(tables)
    summaries = summarize(comps)
    columns = list(dict.fromkeys((c.regime, c.weights) for c in comps))
    wrong = {c.regime: c.teacher_wrong for c in comps}
    head = ["plug-in setting", "mean Δ"] + [f"{r} {w}" for r, w in columns] + ["wins", "losses"]
    lines = [
        f"Δ: best-epoch accuracy minus KD's with the same teacher and CE/KD weights, in points; in brackets ±σ, the "
        f"standard error of the difference. A setting *wins* where Δ > {NOISE_SIGMAS:g}σ and *loses* where Δ < −{NOISE_SIGMAS:g}σ "
        "(below KD by more than the seed noise). Teacher wrong on the student's training rows: "
        + ", ".join(f"{r} {100 * w:.1f} %" for r, w in wrong.items() if w is not None) + ".",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * len(head)) + "|",
    ]
    for s in summaries:
        cells = [s.setting, _fmt(s.mean_delta)]
        by = {(c.regime, c.weights): c for c in s.comparisons}
        for key in columns:
            c = by.get(key)
            cells.append("—" if c is None else f"{_fmt(c.delta)} (±{_fmt(c.noise, signed=False)})")
        cells += [str(len(s.wins)), str(len(s.losses))]
        lines.append("| " + " | ".join(cells) + " |")
    best = choose_default(summaries)
    promoted = promotable(summaries)
    lines += ["", f"![gain over KD against the teacher's wrong rows]({figure.relative_to(ROOT)})", ""]
    lines.append(
        f"Rule (issue 12): the default is the named preset with the best mean Δ that loses nowhere: "
        + (f"**{best.setting}** (mean Δ {_fmt(best.mean_delta)}, wins {len(best.wins)}, losses 0)." if best else "**none qualifies**.")
        + f" The library's default when this was written: `{default_bias_preset()}`."
    )
    lines.append(
        "A research setting qualifies to become a named preset only if it wins somewhere and loses nowhere: "
        + (", ".join(f"**{s.setting}**" for s in promoted) if promoted else "none does") + "."
    )
    return "\n".join(lines)


def demo_evidence(tables: list[dict], source: str) -> dict:
    """What ``beyondkd demo`` compares its run with: per regime and CE/KD weights, KD's best
    accuracy (mean, std, seeds) and each plug-in setting's Δ over it with its standard error."""
    groups: dict = {}
    for table in tables:
        for g in table["groups"]:
            by_weights: dict = {}
            for r in g["rows"]:
                if r.get("method") != "kd":
                    continue
                entry = by_weights.setdefault(r["weights"], {"kd": None, "settings": {}})
                if r.get("plugin") is None:
                    entry["kd"] = dict(r["best"])
                elif r.get("delta_best") is not None:
                    entry["settings"][r["plugin"]] = {**r["best"], "delta": r["delta_best"], "noise": r.get("delta_best_noise")}
            right = (g.get("teacher_right_on_train_rows") or {}).get("mean")
            groups[g["name"]] = {**by_weights, "teacher_wrong": None if right is None else 1.0 - right}
    return {"source": source, "groups": groups}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out-root", default="runs/bench", help="the suites' run folders are <out-root>/<suite>")
    ap.add_argument("--jobs", type=int, default=1, help="student runs trained at once (bench --jobs)")
    ap.add_argument("--tables-only", action="store_true", help="train nothing; use the runs already there")
    ap.add_argument("--note", default="", help="a line added under each section (e.g. the commit the runs were made at)")
    ap.add_argument("--write", action="store_true", help="write the sections and the figure into BENCHMARKS.md")
    args = ap.parse_args(argv)
    tables = []
    for name in SUITES:
        plan = plan_suite(load_suite(name), Path(args.out_root) / name)
        if not args.tables_only:
            execute_plan(plan, log=lambda line: print(line, flush=True), jobs=args.jobs)
        table = build_table(plan)
        tables.append(table)
        text = render_markdown(table)
        print(text)
        if args.write:
            body = text.split("\n", 1)[1]  # the section supplies its own title
            write_section(f"regime-{name}", f"## {name}: {table['description']}\n\n" + provenance() + (f"- {args.note}\n" if args.note else "") + body)
    summary = evidence_markdown(tables, FIGURE)
    print(summary)
    comps = comparisons(tables)
    Path(args.out_root).mkdir(parents=True, exist_ok=True)
    (Path(args.out_root) / "regime-evidence.json").write_text(json.dumps([c.__dict__ for c in comps], indent=2) + "\n")
    if args.write:
        import yaml

        from beyondkd.cli.demo import EVIDENCE

        plot_gain_vs_wrong_rows(comps, FIGURE)
        stamp = provenance().splitlines()[-1].removeprefix("- date: ")
        EVIDENCE.write_text(
            "# Written by `python -m benchmarks.regimes --write` from the regime suites (BENCHMARKS.md, sections regime-*);\n"
            "# read by `beyondkd demo` to compare its own run with the measured seed-to-seed spread.\n"
            + yaml.safe_dump(demo_evidence(tables, f"regime suites, {stamp}"), sort_keys=False, allow_unicode=True))
        write_section("regime-evidence", "## When does the plug-in help? Gain over KD across the regimes\n\n" + provenance()
                      + (f"- {args.note}\n" if args.note else "") + "\n" + summary)
    return 0


if __name__ == "__main__":
    run_main(main)
