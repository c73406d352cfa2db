"""The 29 bone classes of the hand-bone competition, in their fixed order."""

from __future__ import annotations

__all__ = ["CLASSES", "NUM_CLASSES", "CLASS_TO_INDEX", "class_palette"]

CLASSES: tuple[str, ...] = (
    *(f"finger-{i}" for i in range(1, 20)),
    "Trapezium", "Trapezoid", "Capitate", "Hamate", "Scaphoid",
    "Lunate", "Triquetrum", "Pisiform", "Radius", "Ulna",
)
NUM_CLASSES = len(CLASSES)
CLASS_TO_INDEX: dict[str, int] = {name: i for i, name in enumerate(CLASSES)}


def class_palette(num_classes: int = NUM_CLASSES) -> list[tuple[int, int, int]]:
    """One distinct RGB colour per class, stable across runs (used for overlays)."""
    import colorsys

    colours = []
    for i in range(num_classes):
        # golden-ratio hue steps keep neighbouring classes (adjacent bones) far apart in hue
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.85, 1.0)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours
