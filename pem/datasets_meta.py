"""Class metadata of the datasets PEM is trained on (names, colours, thing ids; contiguous train ids)."""

from __future__ import annotations

# Cityscapes' 19 evaluation classes in train-id order, with the official palette colours (RGB).
CITYSCAPES_CLASSES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)),
    ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)),
    ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)),
    ("bus", (0, 60, 100)),
    ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
)
# person, rider, car, truck, bus, train, motorcycle, bicycle.
CITYSCAPES_THING_IDS: tuple[int, ...] = (11, 12, 13, 14, 15, 16, 17, 18)

ADE20K_NUM_CLASSES = 150

# ADE20K panoptic (150 classes, contiguous ids 0..149 in the order of the semantic benchmark):
# the classes that are "things" (instances). Source: the ``isthing`` flags of the category table
# in Mask2Former's ``mask2former/data/datasets/register_ade20k_panoptic.py`` (the metadata the
# official PEM code registers its ``ade20k_panoptic_*`` datasets with): 100 things, 50 stuff.
ADE20K_PANOPTIC_THING_IDS: tuple[int, ...] = (
    7, 8, 10, 12, 14, 15, 18, 19, 20, 22, 23, 24, 27, 30, 31, 32, 33, 35, 36, 37,
    38, 39, 41, 42, 43, 44, 45, 47, 49, 50, 53, 55, 56, 57, 58, 62, 64, 65, 66, 67,
    69, 70, 71, 72, 73, 74, 75, 76, 78, 80, 81, 82, 83, 85, 86, 87, 88, 89, 90, 92,
    93, 95, 97, 98, 102, 103, 104, 107, 108, 110, 111, 112, 115, 116, 118, 119, 120, 121, 123, 124,
    125, 126, 127, 129, 130, 132, 133, 134, 135, 136, 137, 138, 139, 142, 143, 144, 146, 147, 148, 149,
)  # fmt: skip
