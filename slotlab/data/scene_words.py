"""The scenes' vocabulary: shape classes, named colours and the captions that name objects."""

from __future__ import annotations

from typing import Sequence

#: Shape classes; class id = index + 1 (0 = background).
SCENE_CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "heart")

#: Named object colours (RGB in [0, 1]). All are bright or saturated, far from the dark,
#: desaturated backgrounds, so objects always stand out and captions name them correctly.
SCENE_COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.12, 0.12),
    "green": (0.15, 0.75, 0.20),
    "blue": (0.15, 0.35, 0.95),
    "yellow": (0.95, 0.88, 0.15),
    "purple": (0.60, 0.25, 0.85),
    "orange": (1.00, 0.55, 0.10),
    "cyan": (0.15, 0.85, 0.90),
    "pink": (1.00, 0.50, 0.78),
    "white": (0.95, 0.95, 0.95),
}

_NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def class_name(class_id: int) -> str:
    """Name of a scene class id (1..len(SCENE_CLASSES)); 0 is ``"background"``."""
    if class_id == 0:
        return "background"
    if not 1 <= class_id <= len(SCENE_CLASSES):
        raise ValueError(f"scene class id must be in 0..{len(SCENE_CLASSES)}, got {class_id}")
    return SCENE_CLASSES[class_id - 1]


def class_id(name: str) -> int:
    """Class id (index + 1) of a scene class name."""
    if name not in SCENE_CLASSES:
        raise ValueError(f"unknown scene class {name!r}; valid classes: {', '.join(SCENE_CLASSES)}")
    return SCENE_CLASSES.index(name) + 1


def _count_phrase(count: int, color: str, shape: str) -> str:
    if count == 1:
        article = "an" if color[0] in "aeiou" else "a"
        return f"{article} {color} {shape}"
    number = _NUMBER_WORDS[count] if count < len(_NUMBER_WORDS) else str(count)
    return f"{number} {color} {shape}s"  # every scene class has a regular plural


def describe_objects(colors: Sequence[str], classes: Sequence[str]) -> str:
    """Caption naming objects grouped by colour and class, e.g. "two red circles and a blue star".

    Groups appear in the order of their first object.
    """
    counts: dict[tuple[str, str], int] = {}
    for key in zip(colors, classes, strict=True):
        counts[key] = counts.get(key, 0) + 1
    phrases = [_count_phrase(n, color, shape) for (color, shape), n in counts.items()]
    if len(phrases) <= 1:
        return "".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]
