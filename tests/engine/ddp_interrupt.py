"""Run under torchrun by tests/engine/test_distributed.py: a distill run that every rank stops
after the same number of batches, as a kill would (``last.pt`` is what survives).

    torchrun --nproc_per_node 2 tests/engine/ddp_interrupt.py CONFIG.yaml STOP_AFTER_BATCHES
"""

from __future__ import annotations

import sys

from beyondkd.config import load_config
from beyondkd.engine.build import prepare_run
from tests.helpers import StopAfter  # not tests.conftest: it changes torch's thread count


if __name__ == "__main__":
    prepared = prepare_run(load_config(sys.argv[1]), "distill", resume=False)
    prepared.trainer.train_loader = StopAfter(prepared.trainer.train_loader, int(sys.argv[2]), exc=SystemExit(3))
    prepared.trainer.fit()
