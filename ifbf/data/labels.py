"""The Cityscapes label table, taken from cityscapesscripts (no torch import here: ``ifbf score`` uses it)."""

from __future__ import annotations

import numpy as np
from cityscapesscripts.helpers.labels import labels as _LABELS

IGNORE = 255
UNKNOWN = 254  # marks a label id that is not in the Cityscapes table (never a valid trainId)

NAME_TO_ID: dict[str, int] = {label.name: label.id for label in _LABELS if label.id >= 0}
THING_IDS = frozenset(label.id for label in _LABELS if label.hasInstances and label.id >= 0)
EVAL_LABELS = sorted((label for label in _LABELS if 0 <= label.trainId < IGNORE), key=lambda label: label.trainId)
CLASS_NAMES: tuple[str, ...] = tuple(label.name for label in EVAL_LABELS)  # the 19 classes, trainId order
NUM_CLASSES = len(CLASS_NAMES)


def _id_to_train() -> np.ndarray:
    lut = np.full(256, UNKNOWN, np.uint8)
    for label in _LABELS:
        if label.id >= 0:
            lut[label.id] = label.trainId if 0 <= label.trainId < IGNORE else IGNORE
    return lut


ID_TO_TRAIN = _id_to_train()  # labelId -> trainId (255 ignore, 254 unknown id)
TRAIN_TO_ID = np.zeros(256, np.uint8)
TRAIN_TO_ID[: NUM_CLASSES] = [label.id for label in EVAL_LABELS]
PALETTE = np.zeros((256, 3), np.uint8)  # trainId -> RGB, Cityscapes colours; ignore stays black
PALETTE[: NUM_CLASSES] = [label.color for label in EVAL_LABELS]

# The evaluated classes of each dataset a paper can name (experiments/<paper>/paper.yaml: dataset), in the order
# of every per-class count the engine stores. The synthetic dataset is drawn in Cityscapes' layout and classes.
DATASET_CLASSES: dict[str, tuple[str, ...]] = {"cityscapes": CLASS_NAMES}
