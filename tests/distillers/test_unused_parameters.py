"""Every method either gives each trainable parameter a gradient in every step, or says it does not.

Under torchrun the trainable part is wrapped in DistributedDataParallel, which must be told
(``find_unused_parameters``) when a step leaves parameters without gradient; a method that does
so silently would hang or fail a multi-process run. Checked here in one process, per phase.
"""

from __future__ import annotations

import pytest

from beyondkd.core import Progress
from beyondkd.distillers import method_names
from tests.distillers._zoo_helpers import batch, make

PARAMS = {"crd": {"nce_k": 16}, "slkd": {"sl_teachers": 1}}
# epochs at which a method changes what it trains (SLKD sequential, InDistill's curriculum)
PHASES = {"slkd_sequential": (0, 1), "indistill": (0, 1, 10)}


def _cases():
    for name in method_names():
        yield name, PARAMS.get(name, {})
    yield "slkd", {"sl_teachers": 1, "mode": "sequential", "sl_epochs": 1}


@pytest.mark.parametrize("name,params", list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_steps_leave_no_trainable_parameter_without_gradient_unless_declared(name, params):
    key = "slkd_sequential" if params.get("mode") == "sequential" else name
    d = make(name, params).train()
    unused: set[str] = set()
    for epoch in PHASES.get(key, (0,)):
        d.on_epoch_start(epoch)
        d.zero_grad(set_to_none=True)
        out = d.training_step(batch(8), Progress(epoch * 5, 100, epoch, 20))
        out.loss.backward()
        unused |= {n for n, p in d.named_parameters() if p.requires_grad and not n.startswith("teacher.") and p.grad is None}
    assert bool(unused) == d.find_unused_parameters, sorted(unused)[:5]
