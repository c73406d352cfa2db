"""Tuning from out-of-fold predictions: per-class thresholds, minimum object sizes and
soft-vote weights, in sample and cross-validated.

``hbseg-kfold oof`` writes the OOF folders; ``run_tune(TuneConfig(...))`` (``hbseg-tune``)
reads them. Heavy modules load on first use of a name.
"""

from __future__ import annotations

from hbseg.lazy import lazy_exports

__all__ = ["TuneConfig", "run_tune", "OofConfig", "OofSet", "predict_oof", "load_oof",
           "dice_at_cuts", "dice_at_min_sizes", "component_stats", "format_report"]

_WHERE = {
    "TuneConfig": "config", "run_tune": "tuner", "OofConfig": "oof", "OofSet": "oof",
    "predict_oof": "oof", "load_oof": "oof", "dice_at_cuts": "curves",
    "dice_at_min_sizes": "curves", "component_stats": "curves", "format_report": "report",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
