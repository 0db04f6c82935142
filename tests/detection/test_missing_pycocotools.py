"""Without pycocotools, ``beyondkd detect`` says in one line how to install detection support."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from tests.helpers import one_line_error
from tests.detection.tiny_coco import tiny_model, tiny_run


def test_detect_without_pycocotools_names_the_install_command(capsys, monkeypatch, tiny_coco, tmp_path: Path):
    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval", "pycocotools.mask"):
        monkeypatch.setitem(sys.modules, name, None)  # `import pycocotools...` now raises ImportError
    cfg = tmp_path / "teacher.yaml"
    cfg.write_text(yaml.safe_dump(tiny_run(tiny_coco, tmp_path / "run", model=tiny_model())))
    for argv in (["detect", "train-teacher", "-c", str(cfg)], ["detect", "eval", "-k", str(tmp_path / "x.pt"), "-c", str(cfg)]):
        msg = one_line_error(capsys, argv)
        assert "pycocotools" in msg and "pip install 'beyondkd[detection]'" in msg, msg
    assert not (tmp_path / "run").exists()
