"""The demo's header and table: singular "1 epoch", and training time apart from the one-time setup."""

from __future__ import annotations

from beyondkd.cli.main import main


def test_demo_header_and_seconds_columns(capsys, monkeypatch, fmnist_slice, tmp_path):
    monkeypatch.setenv("COLUMNS", "250")  # one line per table row
    assert main(["demo", "-o", str(tmp_path / "demo"), "--data-root", str(fmnist_slice), "--subset", "256",
                 "--epochs", "1", "--teacher-epochs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "1 epochs" not in out
    assert "for 1 epoch," in out and "for 1 epoch each" in out
    header = next(line for line in out.splitlines() if "best" in line and "last" in line)
    assert "train s" in header and "setup s" in header
    assert "teacher-logit cache" in out  # the caption says where the one-time cache is counted
