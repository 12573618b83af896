"""Training: one trainer, checkpoints (safetensors + JSON header, atomic), metrics."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .trainer import RunResult, TrainingError, build_model, evaluate, load_for_eval, train

__all__ = ["train", "evaluate", "build_model", "load_for_eval", "RunResult", "TrainingError",
           "CheckpointError", "load_checkpoint", "save_checkpoint"]
