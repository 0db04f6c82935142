"""Object detection: bias-aware distillation for Faster R-CNN FPN on COCO (``beyondkd detect``).

Modules: :mod:`~beyondkd.detection.config` (validated YAML), :mod:`~beyondkd.detection.models`
(torchvision Faster R-CNN FPN builders), :mod:`~beyondkd.detection.coco` (COCO data),
:mod:`~beyondkd.detection.roi_distill` (KD / BTKD on the RoI head),
:mod:`~beyondkd.detection.evaluate` (COCOeval) and :mod:`~beyondkd.detection.task` (the task
the engine's trainer runs: SGD with warm-up and milestones, COCOeval AP, the run summary).
See docs/detection.md.
"""
