"""Model files: safetensors + card, rebuilt from the registry, checked against the scene."""

from __future__ import annotations

import pickle

import pytest
import torch

from engine.errors import ModelError
from engine.models.registry import (ARCHITECTURES, ModelCard, build_model, load_encoder_weights, load_model, read_card,
                                    save_model)
from engine.scenes.analysis import check_scene


def test_round_trip_keeps_weights_and_card(tmp_path, tiny_model):
    model, card = load_model(tiny_model)
    x = torch.rand(1, 1, 64, 64)
    with torch.inference_mode():
        before = model(x)
    copy = save_model(model, card, tmp_path / "copy.safetensors")
    again, card2 = load_model(copy)
    with torch.inference_mode():
        torch.testing.assert_close(again(x), before)
    assert card2 == card


def test_half_precision_storage_halves_the_file(tmp_path, tiny_model):
    model, card = load_model(tiny_model)
    half = save_model(model, card, tmp_path / "half.safetensors", half=True)
    assert half.stat().st_size < 0.6 * tiny_model.stat().st_size
    assert {w.dtype for w in load_model(half)[0].parameters()} == {torch.float32}


@pytest.mark.parametrize("arch, encoder", [("deeplabv3", "resnet50"), ("deeplabv3plus", "resnet18"), ("unet", "resnet18"), ("segformer", "mit_b0")])
def test_registry_builds_every_family_offline(arch, encoder):
    model = build_model(ModelCard(name="t", architecture=arch, encoder=encoder))
    with torch.inference_mode():
        out = model.eval()(torch.rand(1, 1, 64, 64))
    assert out.shape == (1, 1, 64, 64)


def test_five_class_osd_card_has_five_outputs():
    card = ModelCard(name="osd", architecture="unet", encoder="resnet18", classes=["sea", "oil", "look-alike", "ship", "land"])
    assert card.out_channels == 5 and card.slick_index == 1


def test_unknown_architecture_lists_the_known_ones():
    with pytest.raises(ModelError) as err:
        build_model(ModelCard(name="x", architecture="mystery", encoder="resnet18"))
    assert all(name in str(err.value) for name in ARCHITECTURES)


class _OpensAFile:
    """Unpickling this runs ``open(path, "w")``: what a booby-trapped checkpoint would do."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_a_pickle_is_never_loaded(tmp_path):
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ModelError, match="not a readable model file"):
        read_card(evil)
    # PyTorch checkpoints (.pth) are pickles: the one path that reads them must refuse code in them.
    ran = tmp_path / "code_ran"
    trapped = tmp_path / "encoder.pth"
    torch.save({"conv1.weight": _OpensAFile(str(ran))}, trapped)
    model = build_model(ModelCard(name="x", architecture="unet", encoder="resnet18"))
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        load_encoder_weights(model, trapped)
    assert not ran.exists()


def test_scene_checks():
    card = ModelCard(name="m", architecture="unet", encoder="resnet18", pixel_size=25.0, in_channels=2)
    with pytest.raises(ModelError, match="needs 2 input bands"):
        check_scene(card, band_count=1, pixel_size=25.0)
    card.in_channels = 1
    with pytest.raises(ModelError, match="works at 25 m"):
        check_scene(card, 1, 200.0)
    assert check_scene(card, 1, 25.0) == []
    assert "resampled" in check_scene(card, 1, 40.0)[0]


def test_a_card_says_what_its_dice_was_measured_on():
    """Each way of making a model stores its Dice under its own key; the list says which, and never a bare figure."""
    def card(**metrics) -> ModelCard:
        return ModelCard(name="m", architecture="unet", encoder="tu-resnet18", metrics=metrics)

    assert card().measured is None
    assert card(validation_dice=0.3204).measured.startswith("Dice 0.32 on its validation bands")
    assert card(val_dice=0.5).measured == "Dice 0.50 on its fine-tuning validation tiles"
    assert card(dice=0.26).measured == "Dice 0.26 on the scenes it was fitted to"
    assert card(val_dice=None).measured is None


def test_only_a_fine_tuned_model_no_other_learnt_from_is_removed(tmp_path, monkeypatch, capsys):
    """From the user's models folder: a bundled model, a file elsewhere and a parent of another model are refused with the
    reason and stay; a leaf goes, after which its parent may go too."""
    import hashlib
    import json
    from dataclasses import replace

    from engine.cli.main import main
    from engine.models.registry import DEFAULT_MODEL, user_models_dir

    from conftest import make_model

    monkeypatch.setenv("SLICK_MAPPER_MODELS", str(tmp_path / "models"))
    parent = make_model(user_models_dir() / "parent.safetensors", tile_size=256)
    model, card = load_model(parent)
    lineage = {"parent": {"path": str(parent), "name": card.name, "sha256": hashlib.sha256(parent.read_bytes()).hexdigest()}}
    child = save_model(model, replace(card, name="child", lineage=lineage), user_models_dir() / "child.safetensors")
    elsewhere = make_model(tmp_path / "elsewhere.safetensors", tile_size=256)

    def remove(path) -> tuple[int, dict]:
        capsys.readouterr()
        code = main(["--jsonl", "models", "--remove", str(path)])
        return code, json.loads(capsys.readouterr().out.splitlines()[-1])

    capsys.readouterr()
    assert main(["--jsonl", "models"]) == 0
    listed = {entry["name"]: entry["removable"] for entry in json.loads(capsys.readouterr().out.splitlines()[-1])["data"]["models"]}
    assert listed["child"] and not listed[read_card(DEFAULT_MODEL).name]
    for path, reason in ((DEFAULT_MODEL, "is not in your models folder"), (elsewhere, "is not in your models folder"),
                         (parent, "is the parent of child")):
        code, said = remove(path)
        assert code == 2 and reason in said["message"] and path.is_file()
    assert remove(child) == (0, {"event": "result", "data": {"removed": str(child), "name": "child"}}) and not child.exists()
    assert remove(parent)[0] == 0 and not parent.exists()
