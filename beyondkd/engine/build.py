"""Assemble a classification run from a validated config: device, data, models, method, trainer.

:func:`prepare_run` calls one named builder per step: :func:`check_sections`,
:func:`resolved_config` / :func:`run_record` (what the run records), the run folder check,
:func:`join_process_group`, :func:`build_loaders`, :func:`build_networks`, :func:`build_method`,
:func:`measure_teacher`, :func:`attach_teacher_cache`, the teacher readout,
:func:`compile_networks`, and the :class:`~beyondkd.engine.trainer.Trainer`.
"""

from __future__ import annotations

import logging
import random
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import ValidationError
from torch import nn

from beyondkd.bias.config import BiasConfig, bias_record, resolve_bias
from beyondkd.config import ModelConfig, RunConfig
from beyondkd.data.base import DatasetInfo, TensorImages
from beyondkd.data.loaders import Augment, DatasetLoader, TensorLoader
from beyondkd.data.registry import build_splits
from beyondkd.distillers.base import Distiller, DistillerContext
from beyondkd.distillers.registry import build_distiller, format_validation_error, get_distiller_class, validate_params
from beyondkd.engine.checkpoint import load_checkpoint
from beyondkd.engine.classification import ClassificationTask
from beyondkd.engine.distributed import DistEnv, all_gather_rows, world_size_from_env
from beyondkd.engine.evaluate import evaluation_sums, metrics_from_sums
from beyondkd.engine.freeze import apply_freeze
from beyondkd.engine.resume import check_run_folder
from beyondkd.engine.teacher_cache import CachedTeacherLoader, load_or_compute
from beyondkd.engine.teacher_readout import TeacherReadout, measure_teacher_on_train_rows
from beyondkd.engine.trainer import Trainer, TrainResult
from beyondkd.errors import BeyondKDError, ConfigError
from beyondkd.models.registry import build_model
from beyondkd.models.weights import extract_state_dict, load_state_into, load_weights_file

Mode = Literal["train-teacher", "distill"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; otherwise the named device (checked)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA device is available: use train.device=cpu or auto")
    return device


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python's RNGs for this process."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def build_loaders(cfg: RunConfig, device: torch.device, rank: int = 0, world_size: int = 1) -> tuple[Any, Any, Any, DatasetInfo, dict[str, Any]]:
    """Training loader, ordered un-augmented training loader, validation loader, info, data facts."""
    d = cfg.data
    splits = build_splits(d.name, d.root, options=d.options, download=d.download, image_size=d.image_size, augment=d.augment)
    info = splits.info
    facts = {"dataset": d.name, "root": d.root, "subset": d.subset, "seed": cfg.seed, "image_size": d.image_size,
             "precision": cfg.train.precision}
    channels_last = cfg.train.channels_last
    in_memory = isinstance(splits.train, TensorImages) and d.in_memory in ("auto", True)
    if d.in_memory is True and not isinstance(splits.train, TensorImages):
        raise ConfigError(f"dataset '{d.name}' is too large to hold in memory: set data.in_memory to auto or false")
    if in_memory:
        train = splits.train.subset(d.subset, cfg.seed)
        val = splits.val.subset(d.val_subset, cfg.seed + 1)
        aug = Augment(info.crop_padding, info.flip) if d.augment and (info.crop_padding or info.flip) else None
        common = dict(device=device, seed=cfg.seed, image_size=d.image_size, channels_last=channels_last)
        shards = dict(rank=rank, world_size=world_size)
        train_loader = TensorLoader(train, d.batch_size, train=True, augment=aug, **common, **shards)
        ordered = TensorLoader(train, d.val_batch_size, train=False, augment=None, **common)  # whole split: teacher cache
        val_loader = TensorLoader(val, d.val_batch_size, train=False, augment=None, **common, **shards)
        facts["num_samples"] = len(train)
        return train_loader, ordered, val_loader, info, facts
    from torch.utils.data import Subset

    train_ds, val_ds = splits.train, splits.val
    if d.subset is not None and d.subset < len(train_ds):
        g = torch.Generator().manual_seed(cfg.seed)
        train_ds = Subset(train_ds, torch.randperm(len(train_ds), generator=g)[: d.subset].tolist())
    if d.val_subset is not None and d.val_subset < len(val_ds):
        g = torch.Generator().manual_seed(cfg.seed + 1)
        val_ds = Subset(val_ds, torch.randperm(len(val_ds), generator=g)[: d.val_subset].tolist())
    common2 = dict(device=device, seed=cfg.seed, num_workers=d.num_workers, channels_last=channels_last,
                   rank=rank, world_size=world_size)
    train_loader = DatasetLoader(train_ds, info, d.batch_size, train=True, **common2)
    val_loader = DatasetLoader(val_ds, info, d.val_batch_size, train=False, **common2)
    facts["num_samples"] = len(train_ds)
    return train_loader, None, val_loader, info, facts


def check_batch_size(batch_size: int, num_samples: int, subset: int | None, world_size: int = 1) -> None:
    """A training batch must fit in the (sub)set of each process: else every epoch is one partial batch."""
    per_process = num_samples // max(world_size, 1)
    if batch_size <= per_process:
        return
    where = f" (data.subset={subset})" if subset is not None else ""
    shard = f", {per_process} on each of {world_size} processes" if world_size > 1 else ""
    raise ConfigError(
        f"data.batch_size ({batch_size}) is larger than the {num_samples} training images{where}{shard}: every epoch "
        f"would be a single partial batch; lower data.batch_size to at most {per_process} or raise data.subset"
    )


def _check_classes(role: str, meta: dict[str, Any], info: DatasetInfo, path: str) -> None:
    if "num_classes" in meta and int(meta["num_classes"]) != info.num_classes:
        raise ConfigError(
            f"{role} checkpoint {path} has {meta['num_classes']} classes but dataset '{info.name}' has "
            f"{info.num_classes}: use a {role} trained on {info.name} (beyondkd train-teacher)"
        )
    if "in_channels" in meta and int(meta["in_channels"]) != info.in_channels:
        raise ConfigError(
            f"{role} checkpoint {path} takes {meta['in_channels']}-channel images but dataset '{info.name}' has "
            f"{info.in_channels}: use a {role} trained on {info.name}"
        )


def load_library_network(mcfg: ModelConfig, info: DatasetInfo, role: str) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``mcfg`` with the pretrained weights its library publishes (``pretrained: true``).

    A teacher must predict the dataset's classes, so weights with another class count are
    refused for it; a trained network is re-headed (a new, randomly initialised classifier),
    which is said through the ``beyondkd`` logger.
    """
    from beyondkd.models.pretrained import classifier_name, pretrained_classes
    from beyondkd.models.registry import get_spec

    source = get_spec(mcfg.name).weights
    classes = pretrained_classes(source) if source else None
    if role == "teacher" and classes is not None and classes != info.num_classes:
        raise ConfigError(
            f"teacher {mcfg.name}: its pretrained weights predict {classes} classes but dataset '{info.name}' has "
            f"{info.num_classes}: fine-tune it first (beyondkd train-teacher with model: {{name: {mcfg.name}, "
            "pretrained: true}) and give its best.pt as teacher.checkpoint"
        )
    model = build_model(mcfg.name, info.num_classes, info.in_channels, library_weights=True, **mcfg.options)
    if classes is not None and classes != info.num_classes:
        logging.getLogger("beyondkd").warning(
            "%s: re-headed for %s: the pretrained classifier predicts %d classes, the new one (%s, %d classes) "
            "starts from random init; every other weight is pretrained", mcfg.name, info.name, classes,
            classifier_name(model), info.num_classes,
        )
    return model, {"name": mcfg.name, "num_classes": info.num_classes, "in_channels": info.in_channels,
                   "options": dict(mcfg.options)}


def load_network(mcfg: ModelConfig, info: DatasetInfo, role: str, require_checkpoint: bool) -> tuple[nn.Module, dict[str, Any]]:
    """Build a network for ``info`` and load its weights: a local file (checked against the dataset) or the library's."""
    if mcfg.pretrained:
        return load_library_network(mcfg, info, role)
    if require_checkpoint and not mcfg.checkpoint:
        raise ConfigError(f"{role}.checkpoint is missing: give the path of a trained {role} (beyondkd train-teacher "
                          f"writes best.pt), or {role}.pretrained: true for a timm/torchvision model's published weights")
    meta: dict[str, Any] = {}
    state = None
    if mcfg.checkpoint:
        if not Path(mcfg.checkpoint).is_file():
            hint = "train one with 'beyondkd train-teacher' or fix" if role == "teacher" else "fix"
            raise ConfigError(f"{role} checkpoint not found: {mcfg.checkpoint} ({hint} {role}.checkpoint)")
        raw = load_weights_file(mcfg.checkpoint)
        if isinstance(raw, dict) and isinstance(raw.get("model_meta"), dict):
            meta = raw["model_meta"]
            if meta.get("name") and meta["name"] != mcfg.name:
                raise ConfigError(
                    f"{role} checkpoint {mcfg.checkpoint} holds model '{meta['name']}' but {role}.name is "
                    f"'{mcfg.name}': set {role}.name: {meta['name']}"
                )
            _check_classes(role, meta, info, mcfg.checkpoint)
        state = extract_state_dict(raw)
    options = dict(meta.get("options", {}))
    options.update(mcfg.options)
    model = build_model(mcfg.name, info.num_classes, info.in_channels, **options)
    if state is not None:
        load_state_into(model, state, mcfg.checkpoint)
    meta = {"name": mcfg.name, "num_classes": info.num_classes, "in_channels": info.in_channels, "options": options}
    return model, meta


def freeze_network(model: nn.Module, mcfg: ModelConfig, role: str) -> None:
    """Apply ``freeze`` / ``train_bn`` of the trained network's section (:mod:`beyondkd.engine.freeze`)."""
    if not mcfg.freeze and mcfg.train_bn:
        return
    report = apply_freeze(model, mcfg.freeze, mcfg.train_bn, role)
    total = sum(1 for _ in model.parameters())
    logging.getLogger("beyondkd").info(
        "%s: %d of %d parameter tensors frozen, %d batch norms kept in eval mode",
        role, len(report.frozen), total, len(report.eval_norms),
    )


def parse_bias_with_preset(raw: dict[str, Any] | None) -> tuple[BiasConfig, str] | None:
    """``method.bias`` -> (:class:`BiasConfig`, the preset it came from); None if absent."""
    try:
        return resolve_bias(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "method.bias")) from None


def parse_bias(raw: dict[str, Any] | None) -> BiasConfig | None:
    """``method.bias`` -> :class:`BiasConfig` (``{preset: paper, variant: strict}``); None if absent."""
    resolved = parse_bias_with_preset(raw)
    return None if resolved is None else resolved[0]


def method_name_for(config: RunConfig, mode: Mode) -> str:
    """The method a run uses: ``method.name``, else ``vanilla`` (train-teacher) or ``kd`` (distill)."""
    return config.method.name or ("vanilla" if mode == "train-teacher" else "kd")


def resolved_config(config: RunConfig, mode: Mode) -> RunConfig:
    """``config`` with every default the run depends on written out.

    The method's name and all its parameters (validated, defaults filled in), and the plug-in as
    ``{preset: <the preset it came from>, <every BiasConfig field>}``. Loading the result gives
    the same run whatever the library's defaults are at that time, and two runs made under
    different defaults record different configs (so a benchmark never reuses one for the other).
    """
    name = method_name_for(config, mode)
    params = validate_params(get_distiller_class(name), config.method.params).model_dump(mode="json")
    bias = parse_bias_with_preset(config.method.bias)
    method = {"name": name, "params": params,
              "bias": None if bias is None else {"preset": bias[1], **bias[0].model_dump(mode="json")}}
    return config.model_copy(update={"method": type(config.method)(**method)})


def run_record(config: RunConfig, mode: Mode) -> dict[str, Any]:
    """The resolved method and plug-in of a run, as its summary and checkpoints record them."""
    resolved = resolved_config(config, mode)
    bias = parse_bias_with_preset(config.method.bias)
    return {"method": resolved.method.name, "params": resolved.method.params,
            "bias": None if bias is None else bias_record(*bias)}


@dataclass
class PreparedRun:
    """Everything built for a run, ready for ``trainer.fit``."""

    config: RunConfig
    mode: Mode
    device: torch.device
    info: DatasetInfo
    distiller: Distiller
    trainer: Trainer
    teacher_acc: float | None
    output_dir: Path
    teacher_readout: TeacherReadout | None = None


def check_sections(cfg: RunConfig, mode: Mode) -> None:
    """The config has the sections ``mode`` trains (one-line errors otherwise)."""
    if mode == "train-teacher":
        if cfg.model is None:
            raise ConfigError("train-teacher needs a 'model:' section naming the network to train (got 'student:')"
                              if cfg.student is not None else "train-teacher needs a 'model:' section naming the network to train")
        if cfg.teacher is not None:
            raise ConfigError("train-teacher trains on labels only: remove the 'teacher:' section (or use beyondkd distill)")
    elif cfg.student is None:
        raise ConfigError("distill needs a 'student:' section (use beyondkd train-teacher for a 'model:' config)")


def length_dependence(cfg: RunConfig, mode: Mode) -> str | None:
    """Why the run depends on ``train.epochs`` (LR schedule, method, plug-in), or ``None``."""
    cls = get_distiller_class(method_name_for(cfg, mode))
    return ClassificationTask().length_dependence(cfg.train) or cls.length_dependence(
        validate_params(cls, cfg.method.params), parse_bias(cfg.method.bias))


def join_process_group(cfg: RunConfig, dist: DistEnv | None) -> tuple[torch.device, DistEnv]:
    """The training device and the process group (joined under torchrun; see :mod:`~beyondkd.engine.distributed`)."""
    device = resolve_device(cfg.train.device)
    if dist is None:
        dist = DistEnv.from_env(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    if cfg.train.sync_bn and not (dist.enabled and device.type == "cuda"):
        raise ConfigError("train.sync_bn needs a multi-GPU run (torchrun on CUDA devices): remove it or set it to false")
    return device, dist


def build_networks(cfg: RunConfig, info: DatasetInfo, mode: Mode) -> tuple[nn.Module, dict[str, Any], nn.Module | None, dict[str, Any]]:
    """The trained network (frozen in part as configured) and the teacher (``None`` without one), each with its metadata."""
    role = "student" if mode == "distill" else "model"
    student, student_meta = load_network(cfg.trained, info, role, require_checkpoint=False)
    freeze_network(student, cfg.trained, role)
    teacher, teacher_meta = None, {}
    if cfg.teacher is not None:
        teacher, teacher_meta = load_network(cfg.teacher, info, "teacher", require_checkpoint=True)
    return student, student_meta, teacher, teacher_meta


def build_method(cfg: RunConfig, mode: Mode, student: nn.Module, teacher: nn.Module | None, teacher_meta: dict[str, Any],
                 info: DatasetInfo, num_samples: int, steps_per_epoch: int, device: torch.device) -> Distiller:
    """The distiller on ``device`` (SyncBatchNorm and channels-last as configured)."""
    context = DistillerContext(
        num_classes=info.num_classes, in_channels=info.in_channels,
        image_size=cfg.data.image_size or info.image_size, num_samples=num_samples,
        total_steps=steps_per_epoch * cfg.train.epochs, total_epochs=cfg.train.epochs, seed=cfg.seed,
        teacher_model=cfg.teacher.name if cfg.teacher is not None else None,
        teacher_options=dict(teacher_meta.get("options", {})),
        gather_rows=all_gather_rows,  # identity in one process
    )
    distiller = build_distiller(method_name_for(cfg, mode), student, teacher, cfg.method.params, parse_bias(cfg.method.bias), context)
    if cfg.train.sync_bn:
        for name, child in list(distiller.named_children()):
            if name != "teacher":
                setattr(distiller, name, nn.SyncBatchNorm.convert_sync_batchnorm(child))
    distiller.to(device)
    if cfg.train.channels_last:
        distiller.to(memory_format=torch.channels_last)
    return distiller


def autocast_factory(cfg: RunConfig, device: torch.device):
    """A no-argument factory of the run's autocast context (a null context in fp32)."""
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.train.precision)

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else nullcontext()

    return autocast


def measure_teacher(distiller: Distiller, val_loader: Any, autocast: Any, dist: DistEnv) -> float | None:
    """The teacher's validation top-1 (``None`` without a teacher)."""
    if distiller.teacher is None:
        return None
    return metrics_from_sums(dist.all_reduce_sum(evaluation_sums(distiller.teacher, val_loader, autocast)))["val_acc"]


def attach_teacher_cache(cfg: RunConfig, distiller: Distiller, train_loader: Any, ordered_loader: Any, facts: dict[str, Any],
                         cache_dir: str | Path | None, autocast: Any, device: torch.device) -> Any:
    """The training loader, serving cached teacher logits when the run allows it (``train.teacher_cache``)."""
    if distiller.teacher is None:
        return train_loader
    mode = cfg.train.teacher_cache
    if not (mode == "on" or (mode == "auto" and not cfg.data.augment)):
        return train_loader
    if cfg.data.augment:
        raise ConfigError("train.teacher_cache: on needs data.augment: false (augmented images change every epoch)")
    if not distiller.teacher_logits_only:
        if mode == "on":
            raise ConfigError(f"method '{distiller.name}' reads teacher features, so its teacher cannot be cached: set train.teacher_cache: off")
        return train_loader
    if ordered_loader is None:
        return train_loader
    cdir = Path(cache_dir or cfg.train.cache_dir or (cfg.resolved_output_dir().parent / ".cache"))
    targets = train_loader.targets if hasattr(train_loader, "targets") else torch.zeros(0)
    logits, _ = load_or_compute(distiller.teacher, ordered_loader, facts["num_samples"], targets, facts, cdir, autocast)
    return CachedTeacherLoader(train_loader, logits.to(device))


def compile_networks(cfg: RunConfig, distiller: Distiller) -> None:
    """``torch.compile`` student and teacher when ``train.compile`` asks for it."""
    if not cfg.train.compile:
        return
    mode_name = None if cfg.train.compile in (True, "default") else cfg.train.compile
    distiller.student.compile(mode=mode_name)
    if distiller.teacher is not None:
        distiller.teacher.compile(mode=mode_name)


def prepare_run(config: RunConfig, mode: Mode, dist: DistEnv | None = None, cache_dir: str | Path | None = None,
                resume: bool | None = None) -> PreparedRun:
    """Build data, models, method and trainer for ``train-teacher`` or ``distill``.

    Cheap things are validated first, so a typo fails before any data or model is loaded. With
    ``resume`` given (the CLI passes ``--resume``), the run folder is checked
    (:func:`~beyondkd.engine.resume.check_run_folder`) by every process before it joins the
    process group; ``trainer.fit`` checks it again in any case. Under ``torchrun``
    (``WORLD_SIZE > 1`` in the environment) the process then joins the group and trains its
    shard; see :mod:`beyondkd.engine.distributed`.
    """
    cfg = config
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    check_sections(cfg, mode)
    resolved = resolved_config(cfg, mode).model_dump(mode="json")
    record = run_record(cfg, mode)
    length = length_dependence(cfg, mode)
    output_dir = cfg.resolved_output_dir()
    if resume is not None:
        check_run_folder(output_dir, resume, resolved, length, dist.world_size if dist is not None else world_size_from_env())
    device, dist = join_process_group(cfg, dist)
    seed_everything(cfg.seed)
    train_loader, ordered_loader, val_loader, info, facts = build_loaders(cfg, device, dist.rank, dist.world_size)
    check_batch_size(cfg.data.batch_size, facts["num_samples"], cfg.data.subset, dist.world_size)
    student, student_meta, teacher, teacher_meta = build_networks(cfg, info, mode)
    distiller = build_method(cfg, mode, student, teacher, teacher_meta, info, facts["num_samples"], len(train_loader), device)
    autocast = autocast_factory(cfg, device)
    teacher_acc = measure_teacher(distiller, val_loader, autocast, dist)
    train_loader = attach_teacher_cache(cfg, distiller, train_loader, ordered_loader, facts, cache_dir, autocast, device)
    readout = None
    if distiller.teacher is not None and cfg.train.teacher_readout_rows > 0:
        readout = measure_teacher_on_train_rows(distiller.teacher, train_loader, facts["num_samples"],
                                                cfg.train.teacher_readout_rows, autocast, dist)
    compile_networks(cfg, distiller)
    meta: dict[str, Any] = {
        "name": cfg.name,
        "model_meta": {**student_meta, "dataset": info.name, "image_size": cfg.data.image_size or info.image_size},
        "config": resolved,
        "record": record,
        "length_dependence": length,
    }
    if teacher_acc is not None:
        meta["teacher_acc"] = teacher_acc
        meta["epoch_constants"] = {"teacher_acc": teacher_acc}
    if readout is not None:
        meta["teacher_on_train_rows"] = readout.record()
    trainer = Trainer(distiller, train_loader, val_loader, cfg.train, output_dir, device, meta, dist, ClassificationTask())
    return PreparedRun(cfg, mode, device, info, distiller, trainer, teacher_acc, output_dir, readout)


def run_training(config: RunConfig, mode: Mode, resume: bool = False, cache_dir: str | Path | None = None) -> TrainResult:
    """Prepare and run (the trainer records the resolved config as ``config.yaml``)."""
    prepared = prepare_run(config, mode, cache_dir=cache_dir, resume=resume)
    return prepared.trainer.fit(resume=resume)


def load_trained_model(checkpoint: str | Path, weights_only: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the network saved in a beyondkd checkpoint (for ``eval``)."""
    ckpt = load_checkpoint(checkpoint, weights_only)
    meta = ckpt.get("model_meta") or {}
    if "name" not in meta:
        raise BeyondKDError(f"{checkpoint} has no model metadata: it was not written by beyondkd")
    model = build_model(meta["name"], int(meta["num_classes"]), int(meta["in_channels"]), **meta.get("options", {}))
    model.load_state_dict(ckpt["model"])
    return model, ckpt
