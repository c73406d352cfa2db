"""A self-contained HTML report of ground truth against one or more predictions.

``build_report`` writes a folder whose ``index.html`` opens from the file system in any
browser: a table of images sorted by Dice (worst first) with a per-class heat map, and a
viewer that overlays ground truth and predictions, with per-class toggles and zoom.
"""

from .build import build_report, folder_bytes, model_names
from .config import ReportConfig

__all__ = ["ReportConfig", "build_report", "folder_bytes", "model_names"]
