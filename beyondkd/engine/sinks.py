"""Where a run's metrics go: one :class:`MetricSink` per destination, chosen by ``train.loggers``.

:class:`~beyondkd.engine.logging.MetricsLogger` keeps the run's history and hands every epoch
record and step scalar to its sinks:

========================  ======================================================================
``jsonl`` (always on)     ``metrics.jsonl``, one JSON line per epoch, rewritten atomically from the
                          history; ``beyondkd report``/``bench`` and the plots read it
``tensorboard``           event files under ``<run>/tensorboard``
``mlflow``                an MLflow run (``pip install 'beyondkd[mlflow]'``): the tracking URI of
                          ``MLFLOW_TRACKING_URI``, else a local file store ``<runs>/mlruns``;
                          experiment ``MLFLOW_EXPERIMENT_NAME`` or ``beyondkd``; params = the
                          flattened config; the run id is kept in ``<run>/mlflow_run_id`` so
                          ``--resume`` continues the same MLflow run
``wandb``                 a Weights & Biases run (``pip install 'beyondkd[wandb]'``) in
                          ``<run>/wandb``; ``WANDB_MODE=offline`` keeps it local, ``WANDB_PROJECT``
                          names the project (default ``beyondkd``); resumed by id like MLflow
========================  ======================================================================

Every sink opens its destination on the first write, so a run that fails before training
leaves nothing behind. A sink is a small class with :meth:`MetricSink.log_epoch`,
:meth:`~MetricSink.log_step`, :meth:`~MetricSink.restore` and :meth:`~MetricSink.close`;
registering one in :data:`SINKS` makes it selectable by name.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from beyondkd.engine.checkpoint import atomic_write_text
from beyondkd.engine.resume import flatten as flatten_values
from beyondkd.errors import ConfigError


@dataclass(frozen=True)
class RunInfo:
    """What trackers record about a run besides its metrics: its name and resolved config."""

    name: str = "run"
    config: dict[str, Any] = field(default_factory=dict)


def numbers(record: dict[str, Any]) -> dict[str, float]:
    """The numeric entries of a record (booleans and strings left out)."""
    return {k: float(v) for k, v in record.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def flatten(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"optimizer": {"lr": 0.1}}}`` -> ``{"train.optimizer.lr": "0.1"}`` (the keys of
    :func:`beyondkd.engine.resume.flatten`, each value as text; lists and mappings as JSON)."""
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flatten_values(config, prefix).items()}


class MetricSink:
    """One destination of a run's metrics (subclasses set ``name`` and override what they need).

    Args:
        output_dir: the run folder.
        run: the run's name and config.
    """

    name: ClassVar[str] = ""
    #: the module that must be importable, and the extra that installs it
    requires: ClassVar[tuple[str, str] | None] = None

    def __init__(self, output_dir: Path, run: RunInfo) -> None:
        self.output_dir = Path(output_dir)
        self.run = run

    def log_epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        """One epoch's record (``history`` already ends with it)."""

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        """Scalars of one iteration (every ``train.log_every`` steps)."""

    def restore(self, history: list[dict[str, Any]]) -> None:
        """A resumed run continues from ``history``."""

    def close(self) -> None:
        """Flush and release the destination."""


class JsonlSink(MetricSink):
    """``metrics.jsonl``, rewritten atomically from the whole history on every epoch."""

    name = "jsonl"

    @property
    def path(self) -> Path:
        return self.output_dir / "metrics.jsonl"

    def _write(self, history: list[dict[str, Any]]) -> None:
        atomic_write_text("".join(json.dumps(r) + "\n" for r in history), self.path)

    def log_epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self._write(history)

    def restore(self, history: list[dict[str, Any]]) -> None:
        self._write(history)


class TensorBoardSink(MetricSink):
    """TensorBoard scalars under ``<run>/tensorboard`` (epoch records by epoch, steps as ``step/*``)."""

    name = "tensorboard"

    def __init__(self, output_dir: Path, run: RunInfo) -> None:
        super().__init__(output_dir, run)
        self._writer: Any = None

    def _open(self) -> Any:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.output_dir / "tensorboard"))
        return self._writer

    def log_epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        writer = self._open()
        epoch = int(record["epoch"])
        for key, value in numbers(record).items():
            if key != "epoch":
                writer.add_scalar(key.replace(".", "/"), value, epoch)
        writer.flush()

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        writer = self._open()
        for key, value in scalars.items():
            writer.add_scalar(f"step/{key}", value, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


class MLflowSink(MetricSink):
    """An MLflow run through ``MlflowClient`` (no global active run); see the module docstring."""

    name = "mlflow"
    requires = ("mlflow", "mlflow")
    #: MLflow's per-request limits of ``log_batch``
    MAX_METRICS, MAX_PARAMS, MAX_PARAM_CHARS = 1000, 100, 6000

    def __init__(self, output_dir: Path, run: RunInfo) -> None:
        super().__init__(output_dir, run)
        self._client: Any = None
        self._run_id: str | None = None

    @property
    def id_path(self) -> Path:
        return self.output_dir / "mlflow_run_id"

    def tracking_uri(self) -> str:
        """``MLFLOW_TRACKING_URI``, else a file store ``mlruns`` beside the run folders."""
        uri = os.environ.get("MLFLOW_TRACKING_URI")
        return uri if uri else (self.output_dir.resolve().parent / "mlruns").as_uri()

    def _open(self) -> tuple[Any, str]:
        if self._client is None:
            uri = self.tracking_uri()
            if uri.startswith("file:"):
                # MLflow >= 3.7 keeps its file store behind this opt-in; a local store is what was asked for
                os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            from mlflow.entities import Param
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=uri)
            if self.id_path.is_file():
                self._run_id = self.id_path.read_text().strip()
                self._client.update_run(self._run_id, status="RUNNING")
            else:
                experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "beyondkd")
                found = self._client.get_experiment_by_name(experiment)
                exp_id = found.experiment_id if found is not None else self._client.create_experiment(experiment)
                self._run_id = self._client.create_run(exp_id, run_name=self.run.name).info.run_id
                atomic_write_text(self._run_id + "\n", self.id_path)
                params = [Param(k, v[: self.MAX_PARAM_CHARS]) for k, v in flatten(self.run.config).items()]
                for i in range(0, len(params), self.MAX_PARAMS):
                    self._client.log_batch(self._run_id, params=params[i : i + self.MAX_PARAMS])
        assert self._run_id is not None
        return self._client, self._run_id

    def _log(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        client, run_id = self._open()
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v in values.items()]
        for i in range(0, len(metrics), self.MAX_METRICS):
            client.log_batch(run_id, metrics=metrics[i : i + self.MAX_METRICS])

    def log_epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self._log({k: v for k, v in numbers(record).items() if k != "epoch"}, int(record["epoch"]))

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        self._log({f"step/{k}": v for k, v in scalars.items()}, step)

    def close(self) -> None:
        if self._client is not None and self._run_id is not None:
            self._client.set_terminated(self._run_id)


class WandbSink(MetricSink):
    """A Weights & Biases run in ``<run>/wandb`` (``WANDB_MODE=offline`` for no network)."""

    name = "wandb"
    requires = ("wandb", "wandb")

    def __init__(self, output_dir: Path, run: RunInfo) -> None:
        super().__init__(output_dir, run)
        self._run: Any = None

    @property
    def id_path(self) -> Path:
        return self.output_dir / "wandb_run_id"

    def _open(self) -> Any:
        if self._run is None:
            import wandb

            run_id = self.id_path.read_text().strip() if self.id_path.is_file() else None  # None: W&B draws one
            self.output_dir.mkdir(parents=True, exist_ok=True)
            self._run = wandb.init(
                project=os.environ.get("WANDB_PROJECT", "beyondkd"), name=self.run.name, config=self.run.config,
                dir=str(self.output_dir), id=run_id, resume="allow", reinit="create_new",
            )
            self._run.define_metric("epoch")
            self._run.define_metric("*", step_metric="epoch")
            self._run.define_metric("step/*", step_metric="global_step")
            atomic_write_text(self._run.id + "\n", self.id_path)
        return self._run

    def log_epoch(self, record: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self._open().log(numbers(record))

    def log_step(self, step: int, scalars: dict[str, float]) -> None:
        self._open().log({"global_step": step, **{f"step/{k}": v for k, v in scalars.items()}})

    def close(self) -> None:
        if self._run is not None:
            self._run.finish()


#: every sink by its ``train.loggers`` name
SINKS: dict[str, type[MetricSink]] = {s.name: s for s in (JsonlSink, TensorBoardSink, MLflowSink, WandbSink)}


def build_sinks(names: list[str] | tuple[str, ...], output_dir: Path, run: RunInfo) -> list[MetricSink]:
    """The sinks named (``jsonl`` first and always), each checked to be installed.

    Raises:
        ConfigError: an unknown name, or a tracker whose package is not installed.
    """
    from beyondkd.errors import suggest

    chosen = ["jsonl"] + [n for n in dict.fromkeys(names) if n != "jsonl"]
    sinks = []
    for name in chosen:
        if name not in SINKS:
            raise ConfigError(f"unknown logger '{name}' in train.loggers{suggest(name, list(SINKS))}: choose from {', '.join(SINKS)}")
        cls = SINKS[name]
        if cls.requires is not None and importlib.util.find_spec(cls.requires[0]) is None:
            raise ConfigError(f"train.loggers has {name} but {cls.requires[0]} is not installed: "
                              f"pip install 'beyondkd[{cls.requires[1]}]' (or remove {name})")
        sinks.append(cls(output_dir, run))
    return sinks
