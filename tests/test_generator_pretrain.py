"""Generators pretrained on the bundled real SAR texture with tiny real networks, resumed after a stop, and
fine-tuned from on a real Arctic label store (``generator train --init``); parents of another kind, tile or
network are refused."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from engine.cli.main import main, parse_args
from engine.data import bundled
from engine.errors import Cancelled, InputError
from engine.generation import joint_ddpm, jointnet
from engine.generation.cli import FINE_TUNE, train_options
from engine.generation.generator import GeneratorOptions, train_generator
from engine.generation.joint_ddpm import read_generator_card
from engine.generation.jointnet import JointNetOptions, load_jointnet, train_jointnet
from engine.generation.pretrain import PretrainOptions, checkpoint_folder, pretrain_generator
from engine.generation.stages import checkpoint_path
from engine.machine import file_sha256
from engine.models.pretrain import CHECKPOINTS
from engine.progress import Progress

from conftest import TINY_NET, cancel_at

TINY = PretrainOptions(steps=10, tiles=40, tile=32, net=TINY_NET, batch_size=2, device="cpu")

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> dict[str, Path]:
    """A tiny pretrained generator of each kind, each trained without a stop."""
    folder = tmp_path_factory.mktemp("pretrained")
    made = {}
    for kind in (joint_ddpm.KIND, jointnet.KIND):
        made[kind] = folder / f"{kind}.safetensors"
        pretrain_generator(made[kind], replace(TINY, kind=kind), checkpoints=folder / f"{kind}.checkpoints")
    return made


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_a_stopped_pretraining_goes_on_and_its_card_lists_every_real_tile(tmp_path, pretrained):
    out = tmp_path / "stopped.safetensors"
    with pytest.raises(Cancelled):  # Cancel pressed once full-size step 1 is reported stops after step 2
        pretrain_generator(out, TINY, cancel_at("training", 1), tmp_path / "stopped")
    assert not out.exists()
    assert torch.load(checkpoint_path(tmp_path / "stopped", 2), weights_only=True)["step"] == 2
    logs: list[str] = []
    again = pretrain_generator(out, TINY, Progress(log=logs.append), tmp_path / "stopped")
    assert "training (low res): finished in" in " ".join(logs) and "training: resuming at step 3 of 4" in " ".join(logs)
    whole = read_generator_card(pretrained[joint_ddpm.KIND])
    assert again["history"] == whole.training["history"] and (again["low_res_steps"], again["steps"]) == (6, 4)
    assert _same(joint_ddpm.load_generator(out)[0], joint_ddpm.load_generator(pretrained[joint_ddpm.KIND])[0])
    card = read_generator_card(out)
    training = card.training
    assert card.kind == joint_ddpm.KIND and card.classes == ["water", "slick"] and card.tile_size == 32 and card.b == whole.b
    assert training["pretraining"] and training["how"].startswith("python -m engine generator pretrain --kind dakter --out stopped.safetensors")
    assert list(training["arctic_scenes"]) == list(bundled.POOL)  # never the test scenes its experiments score
    assert training["north_sea_tiles"] == [scene.name for scene in bundled.NORTH_SEA]
    assert bundled.GRD_SCENE.name in training["unlabelled_scene"]
    assert training["mix"] == {"labelled": 0.35, "composite": 0.35, "grd": 0.15, "synthetic": 0.15, "transplant": 0.0, "front": 0.0, "synthetic_lookalikes": False,
                                 "strand_width": 1.0, "faintest": 0.5}
    assert sum(training["tile_kinds"].values()) == training["tiles_cut"] == 40
    assert training["train_tiles"] + training["skipped_tiles"] == 40 and training["train_tiles"] >= 16
    assert (training["low_res_steps"], training["steps"], training["device"], training["b_from"]) == (6, 4, "cpu", "tiles")
    assert training["seconds"] > 0 and 0 < card.b < 1


def test_a_sar_jointnet_pretraining_goes_on_from_its_stopped_stage(tmp_path, pretrained):
    options = replace(TINY, kind=jointnet.KIND)
    out = tmp_path / "joint.safetensors"
    with pytest.raises(Cancelled):
        pretrain_generator(out, options, cancel_at(jointnet.STAGE_NAMES[2], 1), tmp_path / "stages")
    logs: list[str] = []
    result = pretrain_generator(out, options, Progress(log=logs.append), tmp_path / "stages")
    assert f"{jointnet.STAGE_NAMES[1]}: finished in" in " ".join(logs)
    assert f"{jointnet.STAGE_NAMES[2]}: resuming at step 3 of 4" in " ".join(logs)
    assert result["stage_steps"] == [4, 4, 2] and result["classes"] == ["sea", "slick"]
    assert _same(load_jointnet(out)[0], load_jointnet(pretrained[jointnet.KIND])[0])
    assert read_generator_card(out).training["pretraining"]


def test_the_same_command_goes_on_in_its_own_checkpoint_folder(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cli.safetensors"
    args = ["--jsonl", "generator", "pretrain", "--kind", "dakter", "--out", str(out), "--steps", "3", "--tiles", "40", "--tile", "64",
            "--batch-size", "1", "--device", "cpu"]
    options = PretrainOptions(steps=3, tiles=40, batch_size=1, device="cpu")
    folder = checkpoint_folder(out, options)
    assert folder.parent == CHECKPOINTS and folder == checkpoint_folder(out, replace(options, device="cuda"))  # it goes on anywhere
    assert checkpoint_folder(out, replace(options, seed=1)) != folder != checkpoint_folder(tmp_path / "other.safetensors", options)
    monkeypatch.setattr("engine.generation.pretrain.CHECKPOINTS", tmp_path / "checkpoints")
    assert main([*args, "--steps", "0"]) == 2
    assert "needs a step in each of its stages" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])["data"]
    assert result["generator"] == str(out) and (result["low_res_steps"], result["steps"]) == (2, 1)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == [folder.name]
    assert main(args) == 2  # written once, never over a file
    assert "exists already" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]


def test_a_fine_tune_starts_from_its_parent_and_names_it(tmp_path, arctic_store, pretrained, capsys):
    parent = pretrained[joint_ddpm.KIND]
    parse = parse_args
    options = train_options(parse(["generator", "train", "--labels", str(arctic_store), "--out", "o", "--init", str(parent)]))
    assert options == GeneratorOptions(init=parent, tile=32, net=read_generator_card(parent).unet, **FINE_TUNE[joint_ddpm.KIND])
    joint = train_options(parse(["generator", "train", "--kind", jointnet.KIND, "--labels", str(arctic_store), "--out", "o",
                                 "--init", str(pretrained[jointnet.KIND]), "--stage-steps", "0", "0", "2"]))
    assert (joint.tile, list(joint.stage_steps), joint.lr, joint.init) == (32, [0, 0, 2], None, pretrained[jointnet.KIND])
    defaults = train_options(parse(["generator", "train", "--kind", jointnet.KIND, "--labels", "l", "--out", "o",
                                    "--init", str(pretrained[jointnet.KIND])]))
    assert defaults.stage_steps == FINE_TUNE[jointnet.KIND]["stage_steps"] and defaults.training(torch.device("cpu")).lr[2] == 2e-5
    out = tmp_path / "tuned.safetensors"
    assert main(["--jsonl", "generator", "train", "--labels", str(arctic_store), "--out", str(out), "--init", str(parent), "--steps", "3",
                 "--batch-size", "2", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.splitlines()[-1])["data"]
    card, parent_card = read_generator_card(out), read_generator_card(parent)
    assert card.training["initialised_from"] == {"name": parent_card.name, "file": parent.name, "kind": joint_ddpm.KIND,
                                                 "sha256": file_sha256(parent)} == result["initialised_from"]
    assert (result["b"], result["b_from"], result["low_res_steps"], result["train_tiles"]) == (parent_card.b, "parent", 0, 576)
    assert card.unet == parent_card.unet and card.training["lr"] == FINE_TUNE[joint_ddpm.KIND]["lr"]
    tuned = joint_ddpm.load_generator(out)[0]
    assert not _same(tuned, joint_ddpm.load_generator(parent)[0])
    # SAR-JointNet runs stage 3 alone from its parent, on the arctic_store's slicks (the parent's classes).
    joint_out = tmp_path / "joint.safetensors"
    made = train_jointnet(arctic_store, joint_out, replace(joint, device="cpu", batch_size=2))
    assert made["stages"] == [3] and made["classes"] == ["sea", "slick"] and made["train_tiles"] == 576
    assert made["initialised_from"]["sha256"] == file_sha256(pretrained[jointnet.KIND])
    assert sorted(p.name for p in (tmp_path / "joint.stages").iterdir()) == ["stage3.pt"]
    with pytest.raises(InputError, match="runs stage 3 only, not stage 1"):
        train_jointnet(arctic_store, tmp_path / "j1.safetensors", replace(joint, device="cpu", stage=1))


def test_a_parent_of_another_kind_tile_or_network_is_refused_with_what_differs(tmp_path, arctic_store, pretrained, model_factory, capsys):
    def refused(*args: str) -> str:
        assert main(["--jsonl", "generator", "train", "--labels", str(arctic_store), "--out", str(tmp_path / "x.safetensors"), *args]) == 2
        error = json.loads(capsys.readouterr().out.splitlines()[-1])
        return f"{error['kind']}: {error['message']}"

    dakter, joint = pretrained[joint_ddpm.KIND], pretrained[jointnet.KIND]
    assert f"InputError: {dakter.name} holds a dakter generator; a sar-jointnet generator cannot start from it" in refused(
        "--kind", jointnet.KIND, "--init", str(dakter))
    assert f"{joint.name} holds a sar-jointnet generator; a dakter generator" in refused("--init", str(joint))
    assert "InputError: dakter.safetensors cannot start this generator: it has tile size 32 where this run asks for 64." in refused(
        "--init", str(dakter), "--tile", "64")
    assert "network custom where this run asks for small" in refused("--init", str(dakter), "--net", "small")
    assert "is a segmentation model" in refused("--init", str(model_factory(tmp_path / "model.safetensors")))
    with pytest.raises(InputError, match="classes sea, slick where this run asks for sea, slick, look-alike, ship, land"):
        train_jointnet(arctic_store, tmp_path / "y.safetensors", JointNetOptions(init=joint, tile=32, net=TINY_NET, synthetic=4, device="cpu"))
    with pytest.raises(InputError, match="pixel size 25.0 where this run asks for 20.0"):
        train_generator(arctic_store, tmp_path / "z.safetensors", GeneratorOptions(init=dakter, tile=32, net=TINY_NET, pixel_size=20.0))
    assert not list(tmp_path.glob("[xyz]*"))
