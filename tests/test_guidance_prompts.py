"""Captions -> classes -> prompts (GLASS Sec. 4) and the Table 13 template sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from slotlab.data.sample import Sample
from slotlab.datagen.lexicon import COCO_CLASSES, LABEL_SET_NAMES, VOC_CLASSES, label_set, plural
from slotlab.datagen.prompts import (
    Blip2Captioner,
    ClassExtractor,
    LabelCaptioner,
    SampleCaptionCaptioner,
    TemplateSampler,
    TemplateStatistics,
    build_prompt,
    save_tiny_blip2,
    template_caption,
    template_statistics,
)

# Captions in the style of COCO / BLIP-2 captions with the COCO classes they name.
COCO_CAPTIONS = [
    ("A man riding a wave on top of a surfboard.", ["person", "surfboard"]),
    ("Two dogs playing with a frisbee in the park", ["dog", "frisbee"]),
    ("a woman sitting on a couch with a laptop", ["person", "couch", "laptop"]),
    ("A hot dog with mustard on a paper plate", ["hot dog"]),
    ("A red traffic light over a busy street full of cars", ["traffic light", "car"]),
    ("A plate of broccoli and carrots next to a fork and knife", ["broccoli", "carrot", "fork", "knife"]),
    ("A group of people standing around a dining table", ["person", "dining table"]),
    ("A teddy bear sitting on a bed", ["teddy bear", "bed"]),
    ("A brown bear walking through the grass", ["bear"]),
    ("An orange cat sleeping next to a remote control", ["cat", "remote"]),
    ("A bowl of oranges and apples on a table", ["bowl", "orange", "apple", "dining table"]),
    ("A giraffe and two zebras standing in a field", ["giraffe", "zebra"]),
    ("A baseball player swinging a bat at a ball", ["person", "baseball bat", "sports ball"]),
    ("A kitchen with a refrigerator, an oven and a sink", ["refrigerator", "oven", "sink"]),
    ("Children flying kites on the beach", ["person", "kite"]),
    ("a fire hydrant on the side of a road next to a stop sign", ["fire hydrant", "stop sign"]),
    ("A cell phone and a computer mouse on a desk next to a keyboard", ["cell phone", "mouse", "keyboard"]),
    ("A train traveling down tracks next to a bus stop", ["train"]),
    ("A skier going down a ski slope on skis", ["person", "skis"]),
    ("Sheep grazing in a field with a cow", ["sheep", "cow"]),
    ("A clock tower with an airplane flying overhead", ["clock", "airplane"]),
    ("A pizza on a wooden table with a glass of wine and a wine glass", ["pizza", "dining table", "wine glass"]),
    ("Several boats docked in the harbor", ["boat"]),
    ("A bunch of bananas hanging in a market", ["banana"]),
    ("A motorcycle parked beside a bicycle and a truck", ["motorcycle", "bicycle", "truck"]),
    ("An elephant with a baby elephant at the zoo", ["elephant", "person"]),
    ("a bathroom with a toilet, a sink and a toothbrush on the counter", ["toilet", "sink", "toothbrush"]),
    ("A vase of flowers next to a potted plant and a book", ["vase", "potted plant", "book"]),
    ("A lady holding an umbrella and a handbag in the rain", ["person", "umbrella", "handbag"]),
    ("A chocolate cake and cupcakes with a spoon and cups", ["cake", "spoon", "cup"]),
    ("A flat screen TV in a living room with chairs", ["tv", "chair"]),
    ("A man in a suit and tie holding a suitcase", ["person", "tie", "suitcase"]),
    ("A skateboarder doing a trick on a skateboard", ["person", "skateboard"]),
    ("A snowboarder jumping with a snowboard and a backpack", ["person", "snowboard", "backpack"]),
    ("A microwave above a toaster on a counter", ["microwave", "toaster"]),
    ("A tennis player holding a tennis racket on a tennis court", ["person", "tennis racket"]),
    ("A parking meter on a sidewalk next to a bench", ["parking meter", "bench"]),
    ("A sandwich and a bottle of water", ["sandwich", "bottle"]),
    ("A pair of scissors and a hair dryer on a shelf", ["scissors", "hair drier"]),
    ("A horse and a pony next to a bird", ["horse", "bird"]),
    ("A view of the mountains at sunset", []),
    ("donuts in a box at a bakery", ["donut"]),
]


@pytest.mark.parametrize("caption,expected", COCO_CAPTIONS)
def test_coco_class_extraction(caption, expected):
    assert ClassExtractor(label_set("coco"))(caption) == expected


def test_enough_captions():
    assert len(COCO_CAPTIONS) >= 30


@pytest.mark.parametrize(
    "caption,expected",
    [
        ("A cat sitting on a sofa next to a tv monitor", ["cat", "sofa", "tv monitor"]),
        ("A plane on the runway and a motorcycle", ["aeroplane", "motorbike"]),
        ("people at a dining table with potted plants", ["person", "dining table", "potted plant"]),
        ("A couch in front of a television", ["sofa", "tv monitor"]),
    ],
)
def test_voc_class_extraction(caption, expected):
    assert ClassExtractor(label_set("voc"))(caption) == expected


def test_scene_captions():
    extract = ClassExtractor(label_set("scenes"))
    assert extract("two red circles and a blue star") == ["circle", "star"]
    assert extract("an orange hexagon, three white hearts and a green square") == ["hexagon", "heart", "square"]
    assert extract("a purple triangle") == ["triangle"]


@pytest.mark.parametrize("name", LABEL_SET_NAMES)
def test_every_class_name_and_plural_maps_to_itself(name):
    labels = label_set(name)
    extract = ClassExtractor(labels)
    for cls in labels.classes:
        assert extract(f"a photo of a {cls}") == [cls]
        words = cls.split()
        assert extract(" ".join(words[:-1] + [plural(words[-1])]) + " on the floor") == [cls]


@pytest.mark.parametrize("name", LABEL_SET_NAMES)
def test_template_captions_round_trip_through_extraction(name):
    """The label and template captioners rely on extraction recovering their classes."""
    labels = label_set(name)
    extract = ClassExtractor(labels)
    rng = np.random.default_rng(0)
    for _ in range(50):
        k = int(rng.integers(1, min(6, len(labels.classes)) + 1))
        names = [labels.classes[i] for i in rng.choice(len(labels.classes), size=k, replace=False)]
        assert extract(template_caption(names)) == names


def test_pos_tagger_overrides_heuristic():
    # A fake tagger that calls "orange" an adjective wherever it stands.
    tagger = lambda tokens: ["JJ" if t == "orange" else "NN" for t in tokens]  # noqa: E731
    extract = ClassExtractor(label_set("coco"), pos_tagger=tagger)
    assert extract("an orange on a plate") == []
    assert ClassExtractor(label_set("coco"))("an orange on a plate") == ["orange"]
    assert extract.method == "pos-tagger"


def test_build_prompt_format():
    prompt = build_prompt("A man riding a horse on the beach.", ["person", "horse"])
    assert prompt.text == "A man riding a horse on the beach; person horse"
    assert prompt.classes == ("person", "horse")
    assert build_prompt("a view of hills", []).text == "a view of hills"


def _sample(class_ids, caption=""):
    ids = torch.tensor(class_ids, dtype=torch.int64)
    return Sample(
        image=torch.zeros(3, 4, 4), instance_mask=torch.zeros(4, 4, dtype=torch.int64),
        semantic_mask=torch.zeros(4, 4, dtype=torch.int64), ignore_mask=torch.zeros(4, 4, dtype=torch.bool),
        class_ids=ids, boxes=torch.zeros(len(ids), 4), caption=caption,
    )


def test_label_captioner_uses_dataset_spellings():
    voc_names = ["_background_", *[c.replace(" ", "") for c in VOC_CLASSES]]  # "diningtable", "tvmonitor"
    captioner = LabelCaptioner(voc_names)
    samples = [_sample([15, 11, 15]), _sample([20])]
    captions = captioner.caption(None, samples, [])
    extract = ClassExtractor(label_set("voc"))
    assert [extract(c) for c in captions] == [["person", "dining table"], ["tv monitor"]]
    with pytest.raises(ValueError, match="outside"):
        captioner.caption(None, [_sample([21])], [])
    empty = build_prompt(captioner.caption(None, [_sample([])], [])[0], [])
    assert empty.text == "A high-quality image" and empty.classes == ()


def test_sample_caption_captioner_requires_captions():
    captioner = SampleCaptionCaptioner()
    assert captioner.caption(None, [_sample([1], "a red circle")], []) == ["a red circle"]
    with pytest.raises(ValueError, match="no caption"):
        captioner.caption(None, [_sample([1])], [])


def test_template_statistics_and_sampling():
    classes = ("circle", "square", "star")
    lists = [["circle"], ["circle", "square"], ["circle"], ["circle", "square"], []]
    stats = TemplateStatistics.from_class_lists(lists, classes)
    assert stats.class_probability == (1.0, 0.5, 0.0)  # 4 images with objects
    assert stats.count_probability == (0.5, 0.5)
    sampler = TemplateSampler(stats)
    rngs = [np.random.default_rng(i) for i in range(2000)]
    drawn = [sampler.sample_classes(r) for r in rngs]
    assert all("star" not in d and len(set(d)) == len(d) for d in drawn)
    counts = np.bincount([len(d) for d in drawn])
    assert abs(counts[1] / len(drawn) - 0.5) < 0.05  # sampling follows the count distribution
    again = sampler.caption(None, None, [np.random.default_rng(i) for i in range(5)])
    assert again == [template_caption(d) for d in drawn[:5]]  # reproducible from the seed


def test_template_statistics_from_samples_maps_dataset_names():
    coco_names = ["background", *COCO_CLASSES]
    samples = [_sample([1, 1, 17]), _sample([1])]  # 17 = dog
    stats = template_statistics(samples, coco_names, ClassExtractor(label_set("coco")))
    probability = dict(zip(stats.class_names, stats.class_probability))
    assert probability["person"] == 1.0 and probability["dog"] == 0.5 and probability["cat"] == 0.0


def test_blip2_missing_weights_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="hf download"):
        Blip2Captioner(tmp_path / "nowhere")


def test_tiny_blip2_captions(tmp_path):
    captioner = Blip2Captioner(save_tiny_blip2(tmp_path / "blip2"), max_new_tokens=4)
    images = [torch.rand(3, 40, 48), torch.rand(3, 32, 32)]
    captions = captioner.caption(images, None, [])
    assert len(captions) == 2 and all(isinstance(c, str) for c in captions)
    assert all("<image>" not in c for c in captions)
    assert captioner.caption(images, None, []) == captions  # greedy decoding is deterministic
