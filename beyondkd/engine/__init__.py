"""Training engine: trainer, checkpoints, logging, evaluation, plots, run assembly."""
