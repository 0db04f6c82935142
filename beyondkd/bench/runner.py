"""Plan and run a suite through the ordinary engine, one run folder per (row, seed).

Layout under the output folder (default ``runs/bench/<suite>``)::

    teachers/<teacher-config>/          the teachers the suite trains (once, ``teacher_seed``)
    <group>/<row>/seed<k>/              every student run (metrics.jsonl, summary.json, best.pt, ...)
    .cache/                             cached teacher logits shared by the runs
    table.md, table.json                the tables, computed from the run folders

A run folder with ``summary.json`` is finished and is reused; one with only ``last.pt`` is
resumed. A folder whose recorded ``config.yaml`` differs from the planned config is an error
(never silently mixed into a table).

Rows whose config is a detection config (BTKD Table 4) are trained by the detection trainer;
:func:`detection_entry` is the only place the bench reaches into :mod:`beyondkd.detection`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import yaml

from beyondkd.bench.labels import label_contradictions
from beyondkd.bench.suite import GroupSpec, RowSpec, Suite, TeacherSpec, slug
from beyondkd.bias.config import BiasConfig, describe_bias
from beyondkd.config import RunConfig, load_config, read_yaml, resolve_config_path
from beyondkd.errors import BeyondKDError, ConfigError

Mode = Literal["train-teacher", "distill"]
Status = Literal["done", "resume", "new"]

# Settings that do not change what a run computes: a finished run is reused across them.
VOLATILE_KEYS = frozenset({
    "train.progress_bar", "train.device", "train.cache_dir", "train.log_every", "train.threads", "train.teacher_readout_rows",
    "train.nan_check_every",
    "data.num_workers", "data.root", "data.download", "name",
    # detection runs: where COCO lies
    "data.train_images", "data.train_annotations", "data.val_images", "data.val_annotations",
})


@dataclass
class PlannedRun:
    """One training run of the suite."""

    group: str
    label: str
    seed: int
    config_path: str
    overrides: list[str]
    mode: Mode
    config: Any  # a RunConfig, or a detection run's config (:func:`detection_entry`)
    output_dir: Path

    def status(self) -> Status:
        """``done`` (summary.json written), ``resume`` (last.pt only) or ``new``."""
        done = (self.output_dir / "summary.json").is_file()
        started = (self.output_dir / "last.pt").is_file()
        if done or started:
            check_recorded_config(self.output_dir, self.config)
        return "done" if done else "resume" if started else "new"


@dataclass
class PlannedRow:
    """A row of the table: its runs and what they resolve to (the same for every seed)."""

    spec: RowSpec
    runs: list[PlannedRun]
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # the method's resolved parameters
    bias: BiasConfig | None = None  # None: the row has no bias plug-in
    bias_preset: str | None = None  # the preset the plug-in settings came from

    @property
    def eliminate(self) -> bool | None:
        return None if self.bias is None else self.bias.eliminate

    @property
    def rectify(self) -> bool | None:
        return None if self.bias is None else self.bias.rectify

    @property
    def dynamic_gamma(self) -> bool | None:
        """True when the row's loss follows eq. 9 with a dynamic γ."""
        if self.bias is None:
            return None
        return self.bias.eliminate and self.bias.rectify and self.bias.schedule.name != "none"

    @property
    def bias_label(self) -> str | None:
        """The resolved plug-in: a preset name, or ``custom (<preset> + <fields>)``; None without it."""
        if self.bias is None:
            return None
        return describe_bias(self.bias, self.bias_preset).label


@dataclass
class PlannedGroup:
    spec: GroupSpec
    teacher_run: PlannedRun | None
    teacher_checkpoint: str | None
    rows: list[PlannedRow]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (row label, why)


@dataclass
class Plan:
    suite: Suite
    out: Path
    seeds: list[int]
    groups: list[PlannedGroup]
    common: list[str] = field(default_factory=list)  # overrides of every run (suite + command line)

    @property
    def teacher_runs(self) -> list[PlannedRun]:
        seen: dict[Path, PlannedRun] = {}
        for g in self.groups:
            if g.teacher_run is not None:
                seen.setdefault(g.teacher_run.output_dir, g.teacher_run)
        return list(seen.values())

    @property
    def student_runs(self) -> list[PlannedRun]:
        """Seed-major order: a suite cut short still has complete early seeds."""
        return [r for s in self.seeds for g in self.groups for row in g.rows for r in row.runs if r.seed == s]


def check_recorded_config(run_dir: Path, config: Any) -> None:
    """Raise if ``run_dir/config.yaml`` records a different run than ``config``.

    Both sides are *resolved* configs (method parameters and plug-in settings written out, see
    :func:`beyondkd.engine.build.resolved_config`): a run made under other library defaults, e.g.
    another default bias preset, is a different run and is never reused.
    """
    from beyondkd.engine.build import resolved_config
    from beyondkd.engine.resume import flatten as _flatten

    path = run_dir / "config.yaml"
    if not path.is_file():
        return
    mode: Mode = "train-teacher" if config.model is not None else "distill"
    recorded = _flatten(yaml.safe_load(path.read_text()) or {})
    if isinstance(config, RunConfig):
        planned_raw = resolved_config(config, mode).model_dump(mode="json")
    else:  # a detection run records its plug-in resolved the same way
        from beyondkd.detection.task import resolved_detection_config

        planned_raw = resolved_detection_config(config)
    planned = _flatten(yaml.safe_load(yaml.safe_dump(planned_raw)))
    for key in sorted(set(recorded) | set(planned)):
        if key in VOLATILE_KEYS or any(key.startswith(v + ".") for v in VOLATILE_KEYS):
            continue
        if recorded.get(key) != planned.get(key):
            raise BeyondKDError(
                f"{run_dir} holds a run of another config ({key}: {recorded.get(key)!r} there, {planned.get(key)!r} planned): "
                "use another --out, or delete that folder"
            )


def config_exists(path: str) -> bool:
    try:
        resolve_config_path(path)
        return True
    except ConfigError:
        return False


def missing_configs(suite: Suite) -> list[str]:
    """Configs a suite names (non-optional rows and teachers) that are not on this install."""
    names: list[str] = []
    for g in suite.groups:
        if g.teacher is not None:
            names.append(g.teacher.config)
        names.extend(r.config for r in g.rows if not r.optional)
    return sorted({n for n in names if not config_exists(n)})


@dataclass(frozen=True)
class Resolved:
    """What a planned config resolves to: method, its parameters, the plug-in and its preset."""

    method: str
    params: dict[str, Any]
    bias: BiasConfig | None
    bias_preset: str | None


def _validate_deep(cfg: Any, where: str) -> Resolved:
    """Check what ``load_config`` does not: model, dataset, method and bias names and params."""
    from beyondkd.data.registry import get_dataset_spec
    from beyondkd.distillers.registry import get_distiller_class, validate_params
    from beyondkd.engine.build import parse_bias_with_preset
    from beyondkd.models.registry import get_spec

    try:
        if isinstance(cfg, RunConfig):
            get_dataset_spec(cfg.data.name)
            for net in (cfg.model, cfg.student, cfg.teacher):
                if net is not None:
                    get_spec(net.name)
            method = cfg.method.name or ("vanilla" if cfg.model is not None else "kd")
            params = validate_params(get_distiller_class(method), cfg.method.params).model_dump(mode="json")
        else:  # a detection config is validated by its own model
            method, params = "detection", cfg.method.model_dump(mode="json", exclude={"bias"})
        bias = parse_bias_with_preset(cfg.method.bias)
    except BeyondKDError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return Resolved(method, params, None if bias is None else bias[0], None if bias is None else bias[1])


def is_detection_config(path: str) -> bool:
    """True when the config at ``path`` describes a detector (its networks name a ``backbone``)."""
    raw = read_yaml(resolve_config_path(path))
    return any(isinstance(raw.get(k), dict) and "backbone" in raw[k] for k in ("model", "student", "teacher"))


def detection_entry() -> tuple[Callable[..., Any], Callable[..., Any]]:
    """``(load_config, train)`` of the detection package, the bench's only way into it.

    ``load_config(path, overrides)`` is :func:`beyondkd.detection.config.load_detection_config`
    and ``train(config, mode, resume=...)`` is :func:`beyondkd.detection.task.run_detection`
    (the detection task on the engine's Trainer), the entry points of ``beyondkd detect``.
    """
    from beyondkd.detection.config import load_detection_config
    from beyondkd.detection.task import run_detection

    return load_detection_config, run_detection


def detection_summary(run_dir: Path) -> dict[str, Any]:
    """A finished detection run in the units of the tables: box AP (%) of the best and last evaluation."""
    from beyondkd.bench.tables import read_run

    res = read_run(run_dir)
    if res is None:
        raise BeyondKDError(f"{run_dir} holds no evaluated epoch of a detection run: delete that folder to train it again")
    return {"best_acc": res.best_acc, "best_epoch": res.best_epoch, "last_acc": res.last_acc}


def _load(path: str, overrides: list[str], where: str) -> Any:
    if not config_exists(path):
        raise ConfigError(f"{where} references config '{path}', which does not exist on this install (beyondkd configs lists them)")
    try:
        if is_detection_config(path):
            return detection_entry()[0](path, overrides)
        return load_config(path, overrides)
    except BeyondKDError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _teacher_dir(out: Path, spec: TeacherSpec) -> Path:
    """``teachers/<config>[-<hash of the teacher's own overrides>]``: groups may share a teacher."""
    name = str(Path(spec.config).with_suffix(""))
    stem = slug(name.removeprefix("configs/").replace("/", "-") if name.startswith("configs/") else Path(name).name)
    if spec.overrides:
        stem += "-" + hashlib.sha1("\n".join(spec.overrides).encode()).hexdigest()[:8]
    return out / "teachers" / stem


def plan_suite(suite: Suite, out: str | Path | None = None, seeds: list[int] | None = None,
               overrides: list[str] | tuple[str, ...] = ()) -> Plan:
    """Resolve and validate every run of ``suite`` (nothing is trained)."""
    out_dir = Path(out) if out is not None else Path("runs") / "bench" / suite.name
    forced = list(seeds) if seeds else None  # --seeds replaces the suite's and every row's seeds
    all_seeds: list[int] = []
    common = list(suite.overrides) + list(overrides)
    groups: list[PlannedGroup] = []
    for g in suite.groups:
        teacher_run, teacher_ckpt = None, None
        if g.teacher is not None:
            t = g.teacher
            where = f"suite '{suite.name}', group '{g.name}', teacher"
            if t.checkpoint and Path(t.checkpoint).is_file():
                teacher_ckpt = t.checkpoint
                _load(t.config, common + t.overrides, where)  # still validated
            else:
                tdir = _teacher_dir(out_dir, t)
                over = common + t.overrides + [f"seed={suite.teacher_seed}", f"output_dir={tdir}"]
                cfg = _load(t.config, over, where)
                if cfg.model is None:
                    raise ConfigError(f"{where}: config '{t.config}' has no 'model:' section, so it cannot train a teacher")
                _validate_deep(cfg, where)
                teacher_run = PlannedRun(g.name, "teacher", suite.teacher_seed, t.config, over, "train-teacher", cfg, tdir)
                teacher_ckpt = str(tdir / "best.pt")
        rows: list[PlannedRow] = []
        skipped: list[tuple[str, str]] = []
        for r in g.rows:
            where = f"suite '{suite.name}', group '{g.name}', row '{r.label}'"
            if r.optional and not config_exists(r.config):
                skipped.append((r.label, f"config '{r.config}' is not on this install"))
                continue
            runs: list[PlannedRun] = []
            resolved: Resolved | None = None
            row_seeds = forced or r.seeds or list(suite.seeds)
            all_seeds += [s for s in row_seeds if s not in all_seeds]
            for seed in row_seeds:
                rdir = out_dir / slug(g.name) / slug(r.label) / f"seed{seed}"
                over = common + g.overrides + r.overrides + [f"seed={seed}", f"output_dir={rdir}"]
                cfg = _load(r.config, over, where)
                mode: Mode = "train-teacher" if cfg.model is not None else "distill"
                if mode == "distill" and teacher_ckpt is not None:
                    over = over + [f"teacher.checkpoint={teacher_ckpt}"]
                    if teacher_run is not None and isinstance(teacher_run.config, RunConfig) and teacher_run.config.model is not None:
                        # the suite trains this teacher, so it knows its architecture
                        over.append(f"teacher.name={teacher_run.config.model.name}")
                    cfg = _load(r.config, over, where)
                resolved = _validate_deep(cfg, where)
                runs.append(PlannedRun(g.name, r.label, seed, r.config, over, mode, cfg, rdir))
            assert resolved is not None
            problems = label_contradictions(r.label, resolved.bias, resolved.bias_preset)
            if problems:
                raise ConfigError(f"{where}: {problems[0]}: rename the row or fix its overrides")
            rows.append(PlannedRow(r, runs, resolved.method, resolved.params, resolved.bias, resolved.bias_preset))
        groups.append(PlannedGroup(g, teacher_run, teacher_ckpt, rows, skipped))
    return Plan(suite, out_dir, all_seeds or list(forced or suite.seeds), groups, common)


def describe_plan(plan: Plan) -> str:
    """The planned runs, one line each, with their status (for ``--dry-run``)."""
    lines = [f"suite {plan.suite.name}: {plan.suite.description}".rstrip(": "),
             f"seeds {','.join(map(str, plan.seeds))}; runs under {plan.out}",
             f"overrides of every run: {' '.join(plan.common) or '(none)'}"]
    n = 0
    for run in plan.teacher_runs:
        n += 1
        lines.append(f"  [{run.status():6}] teacher {run.config_path} ({run.mode}) -> {run.output_dir}")
    for g in plan.groups:
        if g.teacher_run is None and g.teacher_checkpoint:
            lines.append(f"  [exists] teacher of '{g.spec.name}': {g.teacher_checkpoint}")
        for label, why in g.skipped:
            lines.append(f"  [skip  ] {g.spec.name} / {label}: {why}")
    for run in plan.student_runs:
        n += 1
        extra = [o for o in run.overrides[len(plan.common):] if not o.startswith(("output_dir=", "seed=", "teacher.checkpoint=", "teacher.name="))]
        lines.append(f"  [{run.status():6}] {run.group} / {run.label} seed {run.seed}: {run.config_path} ({run.mode})"
                     + (f" {' '.join(extra)}" if extra else ""))
    lines.append(f"{n} runs planned, {sum(r.status() == 'done' for r in plan.teacher_runs + plan.student_runs)} already finished")
    return "\n".join(lines)


def execute_run(run: PlannedRun, cache_dir: Path) -> dict[str, Any]:
    """Train one planned run (resuming a started one); return its summary."""
    from beyondkd.engine.build import run_training

    status = run.status()
    detection = not isinstance(run.config, RunConfig)
    if status == "done":
        import json

        return detection_summary(run.output_dir) if detection else json.loads((run.output_dir / "summary.json").read_text())
    if detection:
        detection_entry()[1](run.config, run.mode, resume=status == "resume")
        return detection_summary(run.output_dir)
    result = run_training(run.config, run.mode, resume=status == "resume", cache_dir=cache_dir)
    return result.summary


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def _execute_timed(run: PlannedRun, cache_dir: Path) -> tuple[float, dict[str, Any] | None, str | None]:
    """:func:`execute_run`, timed: (seconds, summary, None), or (seconds, None, the one-line error)."""
    t0 = time.perf_counter()
    try:
        summary, error = execute_run(run, cache_dir), None
    except BeyondKDError as exc:
        summary, error = None, str(exc)
    return time.perf_counter() - t0, summary, error


def execute_plan(plan: Plan, log: Callable[[str], None] = print, jobs: int = 1) -> list[tuple[PlannedRun, str]]:
    """Train every unfinished run of ``plan``: teachers first, then the students seed by seed.

    With ``jobs > 1`` the student runs go to that many worker processes (each with
    ``cpu_count // jobs`` threads unless the run sets ``train.threads``); teachers still train
    first, one after another. A run that fails with a user-facing error (a non-finite loss, a
    missing teacher) is reported and skipped so the other runs still train; the failures are
    returned.
    """
    if jobs < 1:
        raise ConfigError(f"--jobs must be at least 1, got {jobs}")
    cache = plan.out / ".cache"
    failures: list[tuple[PlannedRun, str]] = []
    runs = plan.teacher_runs + plan.student_runs
    serial = runs if jobs == 1 else plan.teacher_runs
    count = iter(range(1, len(runs) + 1))

    def report(run: PlannedRun, status: str, seconds: float, summary: dict[str, Any] | None, error: str | None) -> None:
        head = f"[{next(count)}/{len(runs)}] {run.group} / {run.label}" + ("" if run.label == "teacher" else f" seed {run.seed}")
        if error is not None:
            failures.append((run, error))
            log(f"{head}: FAILED: {error}")
            return
        assert summary is not None
        what = "finished earlier" if status == "done" else f"{seconds:.0f} s" + (" (resumed)" if status == "resume" else "")
        log(f"{head}: best {summary['best_acc']:.2f} (epoch {summary['best_epoch']}), last {summary['last_acc']:.2f} [{what}]")

    for run in serial:
        status = run.status()
        report(run, status, *_execute_timed(run, cache))
    if jobs == 1:
        return failures

    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // jobs)
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker, initargs=(threads,)) as pool:
        started = {pool.submit(_execute_timed, run, cache): (run, run.status()) for run in plan.student_runs}
        for future in as_completed(started):
            run, status = started[future]
            report(run, status, *future.result())
    return failures
