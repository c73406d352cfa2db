"""Synthetic hand radiographs with their 29 bone polygons, in the competition's layout.

Each image is a phantom of one adult hand seen postero-anteriorly: the 19 finger bones,
the eight carpal bones and the distal radius and ulna, laid out from a table of typical
adult sizes (millimetres) with per-hand random variation (rotation, scale, finger spread,
finger and metacarpal lengths, wrist deviation). It is rendered like an X-ray: a dark
background with a gradient, a soft-tissue silhouette whose brightness follows its
thickness, bones brighter than soft tissue with a bright cortex and a darker marrow,
attenuations that add where bones overlap, a slight blur and noise.

The labels are exactly the polygons drawn. Trapezium/Trapezoid overlap in every hand and
Triquetrum/Pisiform in (almost) every one, as in the real data.

Image ``i`` of a data set depends only on ``(seed, i)``, never on the number of workers.
"""

from .dataset import GENERATOR_VERSION, SynthConfig, generate_dataset, image_name
from .render import generate_hand

__all__ = ["SynthConfig", "generate_hand", "generate_dataset", "image_name", "GENERATOR_VERSION"]
