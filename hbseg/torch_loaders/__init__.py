"""The plain PyTorch DataLoader back-ends, apart from the DALI ones in ``hbseg.dali_pipes``:

* ``TorchLoader`` (``--loader torch``): OpenCV in DataLoader workers, applying the same
  per-sample draw as the DALI graph (:mod:`hbseg.dali_pipes.draw`), so it yields the same
  samples; the reference the DALI graphs are checked against, and the fallback without DALI.
* ``BaselineLoader`` (``--loader baseline``): the competition baseline's own loading, the
  benchmark's floor.

Both implement :class:`hbseg.dali_pipes.loader_base.Loader` and need no DALI; they are also
exported from ``hbseg.dali_pipes`` and built by name with ``build_loader``.
"""

from .baseline_loader import BaselineLoader
from .torch_loader import TorchLoader

__all__ = ["TorchLoader", "BaselineLoader"]
