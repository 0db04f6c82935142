"""Validated run configuration, read from YAML.

A run file has the sections ``data``, ``model`` (``train-teacher``) or ``student`` + ``teacher``
(``distill``), ``method`` and ``train``; see ``beyondkd/configs/`` for examples. A file may start
from another with ``base: other.yaml`` (deep-merged, path relative to the file). ``key=value``
overrides (``train.epochs=3``) are applied last. Every section forbids unknown keys, and every
problem is reported as one line naming the key.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from beyondkd.errors import ConfigError, suggest

PACKAGE_CONFIGS = Path(__file__).parent / "configs"


class StrictSection(BaseModel):
    """A config section that refuses unknown keys (every one of our config models)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataConfig(StrictSection):
    """Which dataset and how it is batched."""

    name: str = "fashion_mnist"
    root: str | None = None
    download: bool = False
    subset: int | None = Field(None, ge=1, description="training images used (seeded random subset)")
    val_subset: int | None = Field(None, ge=1, description="validation images used")
    augment: bool = True
    batch_size: int = Field(128, ge=1)
    val_batch_size: int = Field(512, ge=1)
    num_workers: int = Field(0, ge=0)
    image_size: int | None = Field(None, ge=8, description="resize images to this side")
    in_memory: Union[bool, Literal["auto"]] = "auto"
    options: dict[str, Any] = Field(
        default_factory=dict, description="dataset-specific settings, validated by the dataset (image_folder: mean, std, ...)"
    )


class ModelConfig(StrictSection):
    """A network: registry name, its weights (a local file or the library's) and architecture options."""

    name: str
    checkpoint: str | None = None
    pretrained: bool = Field(
        False, description="start from the weights timm/torchvision publish for this name, through their caches"
    )
    options: dict[str, Any] = Field(default_factory=dict)
    freeze: list[str] = Field(
        default_factory=list, description="glob patterns over parameter names that are not trained (e.g. layer1.*)"
    )
    train_bn: bool = Field(True, description="false: every batch norm keeps its weights and running statistics")

    @model_validator(mode="after")
    def _one_weights_source(self) -> "ModelConfig":
        if self.pretrained and self.checkpoint:
            raise ValueError("give either checkpoint (a local weights file) or pretrained: true (the library's weights), not both")
        return self


class OptimizerConfig(StrictSection):
    name: Literal["sgd", "adamw", "adam"] = "sgd"
    lr: float = Field(0.05, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(5e-4, ge=0.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)


class SchedulerConfig(StrictSection):
    """LR schedule, stepped every iteration; milestones and warm-up are in epochs."""

    name: Literal["cosine", "multistep", "constant"] = "cosine"
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0.0)
    warmup_epochs: float = Field(0.0, ge=0.0)
    min_lr: float = Field(0.0, ge=0.0)


class MethodConfig(StrictSection):
    """The distillation method, its hyper-parameters and the BTKD plug-in (``bias``)."""

    name: str | None = Field(None, description="default: vanilla for train-teacher, kd for distill")
    params: dict[str, Any] = Field(default_factory=dict)
    bias: dict[str, Any] | None = None


#: metric sinks of ``train.loggers`` (:data:`beyondkd.engine.sinks.SINKS`)
LoggerName = Literal["jsonl", "tensorboard", "mlflow", "wandb"]


class TrainConfig(StrictSection):
    epochs: int = Field(10, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    extra_optimizers: dict[str, OptimizerConfig] = Field(default_factory=dict)
    device: str = "auto"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False
    compile: Union[bool, Literal["default", "reduce-overhead", "max-autotune"]] = False
    grad_clip: float | None = Field(
        None, gt=0.0, description="max gradient L2 norm, applied to each optimizer's parameters separately"
    )
    log_every: int = Field(50, ge=1)
    nan_check_every: int = Field(
        50, ge=1, description="steps between reads of the on-device non-finite loss flag (it is set every step; reading it waits for the device)"
    )
    checkpoint_every_steps: int | None = Field(None, ge=1)
    eval_every: int = Field(1, ge=1)
    teacher_cache: Literal["auto", "on", "off"] = "auto"
    cache_dir: str | None = None
    threads: int | None = Field(None, ge=1)
    sync_bn: bool = False
    progress_bar: bool = Field(
        True, description="a tqdm bar per epoch on a terminal; one plain line per epoch when the output is a file or a log"
    )
    teacher_readout_rows: int = Field(
        10_000, ge=0, description="training rows on which the teacher's accuracy is measured before training (0: off; cached logits: every row)"
    )
    loggers: list[LoggerName] = Field(
        default_factory=lambda: ["jsonl", "tensorboard"],
        description="metric sinks; metrics.jsonl is always written (beyondkd report and bench read it)",
    )


class RunBase(StrictSection):
    """What every kind of run shares: its name, seed and folder, and one trained network.

    Subclasses declare ``model``, ``student`` and ``teacher`` with their own model config type
    and name the CLI commands that train ``model`` and ``student`` in ``commands``.
    """

    commands: ClassVar[tuple[str, str]] = ("train-teacher", "distill")
    name: str = "run"
    seed: int = 0
    output_dir: str | None = None

    @model_validator(mode="after")
    def _one_trained_network(self) -> "RunBase":
        if getattr(self, "model", None) is not None and getattr(self, "student", None) is not None:
            teach, distill = self.commands
            raise ValueError(f"give either 'model' ({teach}) or 'student' ({distill}), not both")
        return self

    @property
    def trained(self) -> Any:
        """The network this run trains."""
        net = getattr(self, "model", None) or getattr(self, "student", None)
        if net is None:
            teach, distill = self.commands
            raise ConfigError(f"the config has neither 'model' ({teach}) nor 'student' ({distill})")
        return net

    def resolved_output_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path("runs") / self.name


class RunConfig(RunBase):
    """A whole run. ``model`` is trained by ``train-teacher``; ``student`` by ``distill``."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig | None = None
    student: ModelConfig | None = None
    teacher: ModelConfig | None = None
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)

    @property
    def trained(self) -> ModelConfig:
        """The network this run trains."""
        return super().trained

    @model_validator(mode="after")
    def _teacher_is_frozen_anyway(self) -> "RunConfig":
        if self.teacher is not None and (self.teacher.freeze or not self.teacher.train_bn):
            raise ValueError("teacher.freeze / teacher.train_bn: the teacher is always frozen; set them on the student")
        return self


def resolve_config_path(path: str | Path) -> Path:
    """Find a config file: as given, else in the package's ``configs/`` folder."""
    p = Path(path)
    if p.is_file():
        return p
    candidates = [PACKAGE_CONFIGS / p]
    if len(p.parts) == 1:
        candidates.append(PACKAGE_CONFIGS / p.name)
    if p.parts and p.parts[0] == "configs":
        candidates.insert(0, PACKAGE_CONFIGS.joinpath(*p.parts[1:]))
    for c in candidates:
        for q in (c, c.with_suffix(".yaml")):
            if q.is_file():
                return q
    known = sorted(f"configs/{q.relative_to(PACKAGE_CONFIGS)}" for q in PACKAGE_CONFIGS.rglob("*.yaml"))
    raise ConfigError(f"config file '{path}' not found{suggest(str(p), known)}: give a path or one of the packaged configs (beyondkd configs)")


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base`` (dicts recursively, everything else replaced)."""
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_yaml_file(path: Path) -> Any:
    """The YAML document in ``path``; a syntax error is a one-line :class:`ConfigError` with its line."""
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None


def read_yaml(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a YAML mapping, resolving ``base:`` chains."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"config 'base' chain loops at {path}")
    raw = parse_yaml_file(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping of sections")
    base = raw.pop("base", None)
    if base is not None:
        base_path = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not base_path.is_file():
            base_path = resolve_config_path(base)
        raw = deep_merge(read_yaml(base_path, _seen + (path,)), raw)
    return raw


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` override (the value is parsed as YAML)."""
    if "=" not in override:
        raise ConfigError(f"override '{override}' must look like section.key=value (e.g. train.epochs=3)")
    key, _, text = override.partition("=")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override '{override}': '{part}' is not a section")
        node = child
    node[parts[-1]] = value


_Model = TypeVar("_Model", bound=BaseModel)


def _allowed_keys(root: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The keys the section at ``loc[:-1]`` of ``root`` accepts (empty if it is not a section)."""
    model: Any = root
    for part in loc[:-1]:
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ()) or ()
        candidates = [ann, *args]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return sorted(model.model_fields) if hasattr(model, "model_fields") else []


def validate_as(cls: type[_Model], raw: dict[str, Any], source: str = "config") -> _Model:
    """Validate a raw mapping into ``cls`` (a run config or a bench suite), raising a one-line :class:`ConfigError`."""
    try:
        return cls(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        dotted = ".".join(str(p) for p in loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(cls, loc)
            hint = suggest(str(loc[-1]), allowed)
            raise ConfigError(f"{source}: unknown key '{dotted}'{hint}; allowed here: {', '.join(allowed)}") from None
        if err["type"] == "missing":
            raise ConfigError(f"{source}: missing key '{dotted}'") from None
        msg = err["msg"].removeprefix("Value error, ")
        if not dotted:
            raise ConfigError(f"{source}: {msg}") from None
        raise ConfigError(f"{source}: bad value for '{dotted}': {msg} (got {err.get('input')!r})") from None


def validate_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a raw mapping into a :class:`RunConfig` with a one-line error."""
    return validate_as(RunConfig, raw, source)


def load_as(
    cls: type[_Model], path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
    raw: dict[str, Any] | None = None,
) -> _Model:
    """Read (``base:`` chains resolved), merge ``raw`` into, override and validate a config as ``cls``."""
    source = "config"
    data: dict[str, Any] = {}
    if path is not None:
        data = read_yaml(resolve_config_path(path))
        source = str(path)
    if raw is not None:
        data = deep_merge(data, raw)
    for o in overrides:
        apply_override(data, o)
    return validate_as(cls, data, source)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (), raw: dict[str, Any] | None = None) -> RunConfig:
    """Read, merge, override and validate a run configuration."""
    return load_as(RunConfig, path, overrides, raw)


def dump_config(config: RunConfig) -> str:
    """The config as YAML (what a run records next to its results)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
