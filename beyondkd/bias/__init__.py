"""The BTKD bias plug-in: elimination, rectification and dynamic learning for any KD method.

Usable on its own in a hand-written training loop::

    from beyondkd.bias import BiasAwareKD
    criterion = BiasAwareKD.from_preset("paper")
    loss, parts = criterion(student(x), teacher_logits, y, progress=step / total_steps)
"""

from beyondkd.bias.config import (
    BIAS_PRESETS,
    DEFAULT_BIAS_PRESET,
    BiasConfig,
    BiasDescription,
    ScheduleConfig,
    bias_config,
    bias_record,
    describe_bias,
    resolve_bias,
)
from beyondkd.bias.loss import BiasAwareKD, BiasPlugin, BiasTargets, wsl_weights
from beyondkd.bias.mask import teacher_right_mask
from beyondkd.bias.rectify import (
    RECTIFY_VARIANTS,
    paper_formula_on_logits,
    paper_rectified_pair,
    rectified_teacher_logits,
    rectify,
)
from beyondkd.bias.schedule import GammaSchedule, Progress, register_schedule, schedule_names

__all__ = [
    "BIAS_PRESETS",
    "DEFAULT_BIAS_PRESET",
    "BiasAwareKD",
    "BiasConfig",
    "BiasDescription",
    "BiasPlugin",
    "BiasTargets",
    "GammaSchedule",
    "Progress",
    "RECTIFY_VARIANTS",
    "ScheduleConfig",
    "bias_config",
    "bias_record",
    "describe_bias",
    "paper_formula_on_logits",
    "paper_rectified_pair",
    "rectified_teacher_logits",
    "rectify",
    "register_schedule",
    "resolve_bias",
    "schedule_names",
    "teacher_right_mask",
    "wsl_weights",
]
