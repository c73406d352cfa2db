"""Segmentation models (segmentation_models_pytorch) and self-describing checkpoints."""

from .card import ModelCard
from .checkpoint import load_model, read_checkpoint, save_checkpoint
from .registry import create_model, list_encoders, list_models, load_encoder_weights

__all__ = [
    "ModelCard", "create_model", "list_models", "list_encoders", "load_encoder_weights",
    "save_checkpoint", "read_checkpoint", "load_model",
]
