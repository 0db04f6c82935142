"""Fake run folders written with the trainer's real schema (``engine/trainer.py``)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def epoch_record(epoch: int, val_acc: float, teacher_acc: float | None = None, rows: int = 1000, right: int = 950,
                 rectified: int = 50, rectified_top: int = 44, gamma: float = 0.0, gamma_last: float = 0.0) -> dict:
    """One ``metrics.jsonl`` line as ``Trainer._train_epoch`` + ``evaluate`` write it for a KD + plug-in run."""
    rec = {
        "epoch": epoch, "train_loss": 1.0 / (epoch + 1), "train_acc": val_acc - 1.0,
        "loss_ce": 0.5, "loss_kd_easy": 0.3, "loss_kd_hard": 0.1,
        "gamma": gamma, "gamma_last": gamma_last,
        "rows": rows, "rows_right": right, "frac_right": right / rows,
        "rows_rectified": rectified, "frac_rectified": rectified / rows,
        "rows_rectified_top_is_label": rectified_top, "frac_rectified_top_is_label": rectified_top / rows,
        "epoch_seconds": 1.5, "images_per_second": rows / 1.5, "lr": 0.05,
        "val_loss": 0.4, "val_acc": val_acc, "val_top5": 99.0,
    }
    if teacher_acc is not None:
        rec["teacher_acc"] = teacher_acc
    return rec


def write_run(run_dir: Path, val_accs: list[float], teacher_acc: float | None = None, finished: bool = True,
              config: dict | None = None, **stats) -> Path:
    """A run folder: metrics.jsonl, and summary.json when ``finished`` (as ``Trainer._finish`` writes it)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    history = [epoch_record(e, a, teacher_acc, **stats) for e, a in enumerate(val_accs)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    if config is not None:
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    if finished:
        best = max(range(len(val_accs)), key=lambda i: val_accs[i])
        summary = {"name": run_dir.name, "method": "kd", "bias": None, "best_acc": val_accs[best], "best_epoch": best + 1,
                   "last_acc": val_accs[-1], "epochs": len(val_accs), "teacher_acc": teacher_acc,
                   "train_seconds": 1.5 * len(val_accs), "rows_rectified": 0}
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return run_dir
