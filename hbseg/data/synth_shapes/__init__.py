"""Synthetic data sets that are not hands, to prove the pipeline on other class lists,
channel counts and label formats: ``spine`` (6 vertebra-like shapes on grey images) and
``blobs`` (3 overlapping cell-like classes on colour images)."""

from .generate import KINDS, ShapesConfig, generate_shapes

__all__ = ["KINDS", "ShapesConfig", "generate_shapes"]
