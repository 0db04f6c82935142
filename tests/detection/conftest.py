from __future__ import annotations

from pathlib import Path

import pytest

from tests.detection.tiny_coco import make_tiny_coco


@pytest.fixture(scope="session")
def tiny_coco(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The ``data`` paths of a tiny COCO-format dataset (8 train, 4 val images, 64×64)."""
    return make_tiny_coco(Path(tmp_path_factory.mktemp("tiny_coco")))
