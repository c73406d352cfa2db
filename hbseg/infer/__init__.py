"""Inference: sliding window, TTA, ensembles, post-processing, submissions, evaluation, pictures.

Heavy modules are imported on first use of a name, so ``import hbseg.infer`` stays cheap.
"""

from __future__ import annotations

from hbseg.lazy import lazy_exports

__all__ = [
    "Predictor", "PreprocessSpec", "InferConfig", "EvalConfig", "EnsembleConfig",
    "run_inference", "evaluate", "run_ensemble", "hard_vote", "soft_vote",
    "encode_rle", "decode_rle", "encode_masks", "RLEError",
    "read_submission", "write_submission", "SubmissionWriter",
    "sliding_window", "gaussian_weights", "tta_predict",
    "load_thresholds", "remove_small_objects", "render_overlay", "write_overlay", "dice_scores",
]

_WHERE = {
    "Predictor": "predictor", "PreprocessSpec": "preprocess",
    "InferConfig": "config", "EvalConfig": "config", "EnsembleConfig": "config",
    "run_inference": "infer", "evaluate": "evaluate", "dice_scores": "evaluate",
    "run_ensemble": "ensemble", "hard_vote": "ensemble", "soft_vote": "ensemble",
    "encode_rle": "rle", "decode_rle": "rle", "encode_masks": "rle", "RLEError": "rle",
    "read_submission": "csv_io", "write_submission": "csv_io", "SubmissionWriter": "csv_io",
    "sliding_window": "sliding", "gaussian_weights": "sliding", "tta_predict": "tta",
    "load_thresholds": "postprocess", "remove_small_objects": "postprocess",
    "render_overlay": "overlay", "write_overlay": "overlay",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
