"""beyondkd: knowledge distillation from a corrected teacher.

The BTKD bias plug-in lives in :mod:`beyondkd.bias` and works in any training loop; the rest
of the package (models, data, distillers, the trainer and the ``beyondkd`` CLI) trains teachers
and students from YAML configs. Messages go through ``logging.getLogger("beyondkd")``.
"""

import logging

__version__ = "0.1.0"

# library messages go to this logger; silent unless the application configures logging
logging.getLogger("beyondkd").addHandler(logging.NullHandler())

from beyondkd.bias import BiasAwareKD, BiasPlugin, rectify, teacher_right_mask

__all__ = ["BiasAwareKD", "BiasPlugin", "__version__", "rectify", "teacher_right_mask"]
