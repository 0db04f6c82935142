"""Metric sinks behind MetricsLogger (jsonl, TensorBoard, MLflow file store, W&B offline) and the beyondkd logger."""

from __future__ import annotations

import json
import logging

import pytest

from beyondkd.cli.main import main
from beyondkd.config import TrainConfig, load_config
from beyondkd.engine.build import run_training
from beyondkd.engine.logging import MetricsLogger, read_metrics
from beyondkd.engine.sinks import SINKS, RunInfo, flatten
from beyondkd.errors import ConfigError
from tests.conftest import slice_config

RECORDS = [{"epoch": 0, "train_loss": 2.0, "val_acc": 40.0, "note": "x"}, {"epoch": 1, "train_loss": 1.5, "val_acc": 55.5}]
RUN = RunInfo("sinks", {"train": {"epochs": 2, "optimizer": {"lr": 0.1}}, "method": {"name": "kd"}})


def _log_two_epochs(logger: MetricsLogger) -> None:
    logger.log_epoch(dict(RECORDS[0]))
    logger.log_step(10, {"loss": 1.75})
    logger.log_epoch(dict(RECORDS[1]))
    logger.close()


def test_config_names_are_the_registered_sinks():
    assert set(TrainConfig.model_fields["loggers"].annotation.__args__[0].__args__) == set(SINKS)
    assert TrainConfig().loggers == ["jsonl", "tensorboard"]
    with pytest.raises(ConfigError, match=r"bad value for 'train.loggers.1'.*'mlflow'.*\(got 'mlfow'\)"):
        load_config(raw={"model": {"name": "cnn_tiny"}, "train": {"loggers": ["jsonl", "mlfow"]}})


def test_nothing_is_written_before_the_first_record_and_jsonl_is_always_on(tmp_path):
    logger = MetricsLogger(tmp_path / "run", loggers=["tensorboard"])
    assert [s.name for s in logger.sinks] == ["jsonl", "tensorboard"]
    assert not (tmp_path / "run").exists()  # a run that fails to start leaves no debris
    _log_two_epochs(logger)
    assert read_metrics(tmp_path / "run") == RECORDS
    assert any((tmp_path / "run" / "tensorboard").iterdir())
    quiet = MetricsLogger(tmp_path / "other", enabled=False, loggers=["tensorboard"])
    _log_two_epochs(quiet)
    assert quiet.history == RECORDS and not (tmp_path / "other").exists()


def test_flatten_gives_dotted_string_params():
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": None, "e": {}}) == {"a.b": "1", "a.c": "[1, 2]", "d": "None", "e": "{}"}


def test_mlflow_file_store_gets_params_metrics_and_resumes_the_same_run(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    out = tmp_path / "run"
    _log_two_epochs(MetricsLogger(out, loggers=["jsonl", "mlflow"], run=RUN))
    run_id = (out / "mlflow_run_id").read_text().strip()
    client = MlflowClient(tracking_uri=store)
    run = client.get_run(run_id)
    assert run.info.run_name == "sinks" and run.info.status == "FINISHED"
    assert run.data.params["train.optimizer.lr"] == "0.1" and run.data.params["method.name"] == "kd"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "val_acc")] == [(0, 40.0), (1, 55.5)]
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "step/loss")] == [(10, 1.75)]
    assert "note" not in run.data.metrics
    resumed = MetricsLogger(out, loggers=["mlflow"], run=RUN)  # --resume: the id file is there
    resumed.restore(RECORDS)
    resumed.log_epoch({"epoch": 2, "val_acc": 60.0})
    resumed.close()
    assert [m.step for m in client.get_metric_history(run_id, "val_acc")] == [0, 1, 2]
    assert len(client.search_runs([run.info.experiment_id])) == 1


def test_wandb_offline_run_lives_in_the_run_folder(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    logger = MetricsLogger(out, loggers=["wandb"], run=RUN)
    sink = logger.sinks[-1]
    logger.log_epoch(dict(RECORDS[0]))
    logger.log_epoch(dict(RECORDS[1]))
    run = sink._run
    assert run.config["train"]["optimizer"]["lr"] == 0.1 and run.name == "sinks"
    assert run.summary["val_acc"] == 55.5 and run.summary["epoch"] == 1
    logger.close()
    run_id = (out / "wandb_run_id").read_text().strip()
    assert list((out / "wandb").glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"))


def test_missing_tracker_package_is_one_line(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"train.loggers has mlflow but mlflow is not installed: pip install 'beyondkd\[mlflow\]'"):
        MetricsLogger(tmp_path, loggers=["mlflow"])


def test_run_with_mlflow_logs_every_epoch_beside_metrics_jsonl(fmnist_slice, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = slice_config(fmnist_slice, tmp_path / "runs" / "tracked", None, name="tracked", model={"name": "cnn_tiny"},
                       data={"subset": 128}, train={"epochs": 2, "loggers": ["mlflow"], "log_every": 1})
    result = run_training(load_config(raw=raw), "train-teacher")
    run_id = (tmp_path / "runs" / "tracked" / "mlflow_run_id").read_text().strip()
    client = MlflowClient(tracking_uri=(tmp_path / "runs" / "mlruns").as_uri())  # the default store beside the runs
    accs = [m.value for m in client.get_metric_history(run_id, "val_acc")]
    assert accs == [r["val_acc"] for r in result.history] == [r["val_acc"] for r in read_metrics(result.output_dir)]
    assert client.get_run(run_id).data.params["model.name"] == "cnn_tiny"
    assert len(client.get_metric_history(run_id, "step/loss")) == 4  # 2 steps per epoch, logged every step
    assert not (result.output_dir / "tensorboard").exists()


def test_library_messages_go_through_the_beyondkd_logger(fmnist_slice, tmp_path, capsys, caplog):
    raw = slice_config(fmnist_slice, tmp_path / "frozen", None, name="frozen", model={"name": "cnn_tiny", "freeze": ["stage1.*"]},
                       data={"subset": 64}, train={"epochs": 1, "loggers": ["jsonl"]})
    path = tmp_path / "frozen.yaml"
    path.write_text(json.dumps(raw))
    assert main(["train-teacher", "-c", str(path)]) == 0
    captured = capsys.readouterr()
    assert "model: 3 of 10 parameter tensors frozen" in captured.err  # the CLI shows the library's messages
    assert "parameter tensors frozen" not in captured.out  # stdout keeps the CLI's own output
    log = logging.getLogger("beyondkd")
    log.setLevel(logging.ERROR)  # an application silences them the usual way
    try:
        raw["output_dir"] = str(tmp_path / "quiet")
        path.write_text(json.dumps(raw))
        assert main(["train-teacher", "-c", str(path)]) == 0
        assert "frozen" not in capsys.readouterr().err
    finally:
        log.setLevel(logging.INFO)
