"""Label sets and the built-in lexicon that maps caption words to class names.

GLASS (Sec. 4, "Conditional image generation") keeps the caption nouns that belong to
the label set of the dataset. The NLTK tagger data cannot be assumed to be installed, so
matching works offline from this lexicon: every class has its own name, its plural, a
list of aliases (man/woman/people -> person, bike -> bicycle, ...) with their plurals,
and multi-word names ("traffic light", "hot dog"). Class id = index in ``classes`` + 1;
0 is the background (the same convention as ``slotlab.data.scenes``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

#: The 80 COCO object classes in the standard order (ids 1..80 here are contiguous,
#: not the COCO category ids 1..90).
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat",
    "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack",
    "umbrella", "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball",
    "kite", "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket",
    "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair",
    "couch", "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse",
    "remote", "keyboard", "cell phone", "microwave", "oven", "toaster", "sink",
    "refrigerator", "book", "clock", "vase", "scissors", "teddy bear", "hair drier",
    "toothbrush",
)  # fmt: skip

#: The 20 PASCAL VOC classes in the standard order, spelt as words a text encoder reads
#: ("dining table", not "diningtable"; the raw spellings are aliases).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "dining table", "dog", "horse", "motorbike", "person", "potted plant", "sheep", "sofa",
    "train", "tv monitor",
)  # fmt: skip

# People words shared by COCO and VOC.
_PERSON_ALIASES = (
    "people", "man", "men", "woman", "women", "boy", "girl", "child", "children", "kid",
    "baby", "guy", "lady", "ladies", "gentleman", "gentlemen", "adult", "teenager",
    "player", "skier", "surfer", "skateboarder", "snowboarder", "rider", "pedestrian",
    "crowd", "persons", "toddler", "batter", "catcher", "pitcher", "chef", "cowboy",
)  # fmt: skip

_COCO_ALIASES: dict[str, tuple[str, ...]] = {
    "person": _PERSON_ALIASES,
    "bicycle": ("bike", "cycle"),
    "car": ("taxi", "sedan", "suv", "automobile"),
    "motorcycle": ("motorbike", "motor bike", "motor cycle", "dirt bike", "moped", "scooter"),
    "airplane": ("plane", "aeroplane", "jet", "airliner", "aircraft", "jetliner"),
    "train": ("locomotive",),
    "truck": ("pickup", "lorry", "firetruck", "fire truck"),
    "boat": ("ship", "sailboat", "canoe", "kayak", "yacht", "ferry"),
    "traffic light": ("stoplight", "traffic signal", "stop light"),
    "fire hydrant": ("hydrant",),
    "parking meter": ("meter",),
    "bird": ("seagull", "gull", "pigeon", "duck", "parrot", "goose", "geese", "swan", "owl"),
    "cat": ("kitten", "kitty"),
    "dog": ("puppy", "pup"),
    "horse": ("pony", "foal"),
    "sheep": ("lamb",),
    "cow": ("cattle", "calf", "calves", "bull", "ox", "oxen"),
    "bear": ("polar bear", "grizzly"),
    "backpack": ("back pack", "rucksack"),
    "umbrella": ("parasol",),
    "handbag": ("purse", "hand bag"),
    "tie": ("necktie",),
    "suitcase": ("luggage", "suit case"),
    "skis": ("ski",),
    "sports ball": ("ball", "soccer ball", "tennis ball"),
    "baseball bat": ("bat",),
    "baseball glove": ("glove", "mitt"),
    "skateboard": ("skate board",),
    "surfboard": ("surf board",),
    "tennis racket": ("racket", "racquet", "tennis racquet"),
    "wine glass": ("wineglass",),
    "cup": ("mug",),
    "knife": ("knives",),
    "sandwich": ("sub", "burger", "hamburger"),
    "hot dog": ("hotdog",),
    "donut": ("doughnut",),
    "cake": ("cupcake",),
    "couch": ("sofa",),
    "potted plant": ("plant", "houseplant", "pot plant"),
    "dining table": ("table", "dinner table", "kitchen table", "diningtable"),
    "tv": ("television", "tv set"),
    "laptop": ("laptop computer",),
    "mouse": ("computer mouse", "mice"),
    "remote": ("remote control", "controller"),
    "cell phone": ("phone", "cellphone", "smartphone", "mobile phone"),
    "oven": ("stove",),
    "refrigerator": ("fridge",),
    "teddy bear": ("teddy", "stuffed animal"),
    "hair drier": ("hair dryer", "blow dryer", "hairdryer"),
    "toothbrush": ("tooth brush",),
}

_VOC_ALIASES: dict[str, tuple[str, ...]] = {
    "aeroplane": ("airplane", "plane", "jet", "airliner", "aircraft", "jetliner"),
    "bicycle": ("bike", "cycle"),
    "bird": _COCO_ALIASES["bird"],
    "boat": _COCO_ALIASES["boat"],
    "bus": (),
    "car": _COCO_ALIASES["car"],
    "cat": _COCO_ALIASES["cat"],
    "cow": _COCO_ALIASES["cow"],
    "dining table": ("table", "dinner table", "kitchen table", "diningtable"),
    "dog": _COCO_ALIASES["dog"],
    "horse": _COCO_ALIASES["horse"],
    "motorbike": ("motorcycle", "motor bike", "motor cycle", "dirt bike", "moped", "scooter"),
    "person": _PERSON_ALIASES,
    "potted plant": ("plant", "houseplant", "pot plant", "pottedplant"),
    "sheep": ("lamb",),
    "sofa": ("couch",),
    "train": ("locomotive",),
    "tv monitor": ("tv", "television", "monitor", "tvmonitor", "tv set", "computer monitor"),
}

_SCENE_ALIASES: dict[str, tuple[str, ...]] = {
    "circle": ("disc", "disk"),
    "hexagon": ("hex",),
}

# Plurals that the suffix rules below get wrong.
_IRREGULAR_PLURALS: dict[str, str] = {
    "person": "people", "man": "men", "woman": "women", "child": "children", "mouse": "mice",
    "knife": "knives", "sheep": "sheep", "skis": "skis", "scissors": "scissors",
    "goose": "geese", "ox": "oxen", "calf": "calves", "foot": "feet", "cattle": "cattle",
    "luggage": "luggage", "broccoli": "broccoli", "people": "people", "men": "men",
    "women": "women", "children": "children", "crowd": "crowds", "tv": "tvs",
}  # fmt: skip

# Words that name a class as a noun but are often a modifier of the following noun
# ("an orange cat", "a ski slope", "a bus stop"). Without a POS tagger, a match of one of
# these is dropped when the next word is a colour, a class word or one of its head nouns.
_MODIFIER_HEADS: dict[str, tuple[str, ...]] = {
    "orange": ("shirt", "jacket", "vest", "cone", "cones", "juice", "light", "sky", "sunset", "color", "colored"),
    "ski": ("slope", "slopes", "lift", "resort", "lodge", "trail", "run", "area", "pole", "poles", "boots",
            "jacket", "suit", "hill", "mountain", "race", "jump", "gear", "equipment"),
    "bus": ("stop", "station", "terminal", "lane", "shelter"),
    "train": ("station", "tracks", "track", "platform", "crossing"),
    "toilet": ("paper", "seat", "lid", "tank", "brush"),
    "tennis": ("court", "match", "game"),
    "pizza": ("box", "cutter", "oven", "slicer"),
    "kite": ("surfing", "surfer", "boarding"),
    "cake": ("stand", "pan"),
    "table": ("cloth", "top", "lamp"),
}  # fmt: skip

COLOR_WORDS: frozenset[str] = frozenset(
    "red green blue yellow purple orange cyan pink white black brown grey gray silver gold "
    "golden tan beige dark light bright colorful colourful multicolored".split()
)


def plural(word: str) -> str:
    """English plural of a single word (the last word of a multi-word name is inflected)."""
    if word in _IRREGULAR_PLURALS:
        return _IRREGULAR_PLURALS[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and len(word) > 1 and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    if word.endswith("fe"):
        return word[:-2] + "ves"
    return word + "s"


def surface_forms(name: str) -> tuple[str, ...]:
    """A name and its plural (multi-word names inflect their last word)."""
    words = name.split()
    return (name, " ".join(words[:-1] + [plural(words[-1])]))


@dataclass(frozen=True)
class LabelSet:
    """Class names of one dataset and the lexicon that finds them in captions.

    ``forms`` maps every surface form (a lower-case word or multi-word phrase: class
    names, aliases and their plurals) to its class name. A class's own name always maps
    to itself, even where another class lists it as an alias.
    """

    name: str
    classes: tuple[str, ...]
    aliases: dict[str, tuple[str, ...]] = field(default_factory=dict)
    forms: dict[str, str] = field(init=False, repr=False, compare=False)
    max_words: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.aliases) - set(self.classes)
        if unknown:
            raise ValueError(f"label set {self.name!r}: aliases for unknown classes {sorted(unknown)}")
        forms: dict[str, str] = {}
        for name in self.classes:
            for form in surface_forms(name):
                forms.setdefault(form, name)
        for name, aliases in self.aliases.items():
            for alias in aliases:
                for form in surface_forms(alias):
                    forms.setdefault(form, name)
        object.__setattr__(self, "forms", forms)
        object.__setattr__(self, "max_words", max(len(form.split()) for form in forms))

    def class_id(self, name: str) -> int:
        """Id (index + 1) of a class name of this label set."""
        if name not in self.classes:
            raise ValueError(f"{name!r} is not a class of label set {self.name!r}; classes: {', '.join(self.classes)}")
        return self.classes.index(name) + 1

    def class_name(self, class_id: int) -> str:
        if not 1 <= class_id <= len(self.classes):
            raise ValueError(f"class id {class_id} outside 1..{len(self.classes)} of label set {self.name!r}")
        return self.classes[class_id - 1]


def _scene_label_set() -> LabelSet:
    from slotlab.data.scene_words import SCENE_CLASSES

    return LabelSet("scenes", SCENE_CLASSES, _SCENE_ALIASES)


_LABEL_SET_BUILDERS = {
    "coco": lambda: LabelSet("coco", COCO_CLASSES, _COCO_ALIASES),
    "voc": lambda: LabelSet("voc", VOC_CLASSES, _VOC_ALIASES),
    "scenes": _scene_label_set,
}

#: Names accepted by ``label_set``.
LABEL_SET_NAMES: tuple[str, ...] = tuple(_LABEL_SET_BUILDERS)


@lru_cache(maxsize=None)
def label_set(name: str) -> LabelSet:
    """The built-in label set ``name``: "coco" (80 classes), "voc" (20) or "scenes" (6)."""
    if name not in _LABEL_SET_BUILDERS:
        raise ValueError(f"unknown label set {name!r}; choose one of {', '.join(LABEL_SET_NAMES)}")
    return _LABEL_SET_BUILDERS[name]()


def modifier_heads(word: str) -> tuple[str, ...]:
    """Nouns that, following ``word``, make ``word`` a modifier rather than an object."""
    return _MODIFIER_HEADS.get(word, ())


def is_ambiguous_modifier(word: str) -> bool:
    return word in _MODIFIER_HEADS
