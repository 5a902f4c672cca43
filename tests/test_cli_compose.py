"""`slotlab reconstruct` and `slotlab compose` on a GLASS checkpoint (the paper preset on tiny
twins, untrained: what the commands do does not depend on the weights): one behaviour a test."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from slotlab.cli import main

SPLIT = "scenes?split=val&size=6"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Two random 40 x 40 RGB images and a class map of img0 (class 3 in a square)."""
    root = tmp_path_factory.mktemp("images")
    generator = torch.Generator().manual_seed(0)
    for i in range(2):
        pixels = (torch.rand(40, 40, 3, generator=generator) * 255).byte().numpy()
        Image.fromarray(pixels).save(root / f"img{i}.png")
    labels = torch.zeros(40, 40, dtype=torch.uint8)
    labels[5:20, 5:20] = 3
    Image.fromarray(labels.numpy()).save(root / "classes0.png")
    Image.fromarray(labels[:30].numpy()).save(root / "small.png")  # not the image's size
    return root


def compose(glass_twin_dir, images, out, *args) -> int:
    return main(["compose", "--checkpoint", glass_twin_dir, "--image", str(images / "img0.png"), *map(str, args),
                 "--out", str(out)])


def test_reconstruct_writes_each_image_beside_its_reconstruction(glass_twin_dir, images, tmp_path):
    assert main(["reconstruct", "--checkpoint", glass_twin_dir, "--images", str(images / "img0.png"), "--steps", "2",
                 "--out", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "img0-reconstruction.png").size == (512, 256)


def test_reconstruct_scores_images_of_a_split(glass_twin_dir, tmp_path):
    assert main(["reconstruct", "--checkpoint", glass_twin_dir, "--data", SPLIT, "--num-images", "5",
                 "--batch-size", "2", "--steps", "2", "--out", str(tmp_path)]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["num_images"] == 5 and 0 < metrics["ssim"] <= 1 and "fid" not in metrics


def test_reconstruct_scores_fid_with_given_inception_weights(glass_twin_dir, tmp_path):
    from safetensors.torch import save_file

    from slotlab.metrics.inception import FIDInceptionV3

    save_file(FIDInceptionV3().state_dict(), str(tmp_path / "inception.safetensors"))  # random weights
    assert main(["reconstruct", "--checkpoint", glass_twin_dir, "--data", SPLIT, "--num-images", "4", "--steps", "2",
                 "--fid-weights", str(tmp_path / "inception.safetensors"), "--out", str(tmp_path / "fid")]) == 0
    metrics = json.loads((tmp_path / "fid" / "metrics.json").read_text())
    assert metrics["fid_num_images"] == 4 and metrics["fid"] >= 0


def test_reconstruct_refuses_more_images_than_the_split_has(glass_twin_dir, tmp_path):
    assert main(["reconstruct", "--checkpoint", glass_twin_dir, "--data", SPLIT, "--num-images", "7",
                 "--out", str(tmp_path)]) == 2


def test_reconstruct_lpips_needs_both_weight_files(glass_twin_dir, tmp_path):
    assert main(["reconstruct", "--checkpoint", glass_twin_dir, "--data", SPLIT, "--lpips-vgg", "v.pth",
                 "--out", str(tmp_path)]) == 2


def test_compose_removes_slots_and_adds_those_of_another_image(glass_twin_dir, images, tmp_path):
    assert compose(glass_twin_dir, images, tmp_path, "--with", images / "img1.png", "--remove", "1", "--add", "0", "2",
                   "--steps", "2") == 0
    assert Image.open(tmp_path / "img0-composition.png").size == (768, 256)


def test_compose_add_needs_a_second_image(glass_twin_dir, images, tmp_path):
    assert compose(glass_twin_dir, images, tmp_path, "--add", "1") == 2


def test_compose_removes_the_slot_of_a_class(glass_twin_dir, images, tmp_path):
    assert compose(glass_twin_dir, images, tmp_path, "--class-map", images / "classes0.png", "--remove-class", "3",
                   "--steps", "2") == 0
    assert (tmp_path / "img0-composition.png").is_file()


def test_compose_refuses_a_class_map_of_another_size(glass_twin_dir, images, tmp_path):
    assert compose(glass_twin_dir, images, tmp_path, "--class-map", images / "small.png", "--remove-class", "3") == 2


def test_compose_list_is_the_same_whatever_the_global_random_stream(glass_twin_dir, images, tmp_path, capsys):
    listings = []
    for _ in range(2):  # the global random stream moves between the calls; the listing must not
        torch.rand(100)
        capsys.readouterr()
        assert compose(glass_twin_dir, images, tmp_path, "--list") == 0
        listings.append(capsys.readouterr().out)
    assert listings[0] == listings[1] and listings[0].startswith("slot 0:")


def test_compose_interactive_lists_the_slots_then_edits(glass_twin_dir, images, tmp_path, capsys, monkeypatch):
    assert compose(glass_twin_dir, images, tmp_path / "listed", "--list") == 0
    listing = capsys.readouterr().out
    answers = iter(["1 2"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert compose(glass_twin_dir, images, tmp_path / "edited", "--interactive", "--steps", "2") == 0
    assert capsys.readouterr().out.startswith(listing)  # the list, then the edit
    assert (tmp_path / "edited" / "img0-composition.png").is_file()
