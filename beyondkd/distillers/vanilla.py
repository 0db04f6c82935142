"""Training on labels alone: teachers and the cross-entropy baseline."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from beyondkd.bias.schedule import Progress
from beyondkd.data.base import Batch
from beyondkd.distillers.base import Distiller, StepOutput
from beyondkd.distillers.registry import register_distiller
from beyondkd.losses.kd import cross_entropy


class VanillaParams(BaseModel):
    """Hyper-parameters of label training."""

    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)


@register_distiller("vanilla")
class Vanilla(Distiller):
    """``L = CE(student(x), y)``; no teacher."""

    Params = VanillaParams
    needs_teacher = False
    supports_bias = False
    description = "cross-entropy on labels (teachers, baseline)"

    def training_step(self, batch: Batch, progress: Progress) -> StepOutput:
        logits = self.student(batch.images)
        loss = cross_entropy(logits, batch.targets, self.params.label_smoothing).mean()
        return StepOutput(loss, logits, {"ce": loss.detach()})
