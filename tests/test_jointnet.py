"""SAR-JointNet with tiny real networks: the joining layers, the three stages and their checkpoints, training
on a real Arctic label store with look-alikes, sampling into a sample folder, and the two kinds of generator
file told apart."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import UNet2DModel
from shapely.geometry import box

from engine.cli.main import main, parse_args
from engine.contract import LABEL_CLASSES
from engine.errors import Cancelled, InputError, ModelError
from engine.generation import joint_ddpm, samples
from engine.generation.cli import train_options
from engine.generation.generator import GeneratorOptions, generate
from engine.generation.joint_ddpm import GeneratorCard, JointSet, balancing_factor, build_unet, read_generator_card, save_generator, unet_config
from engine.generation.jointnet import (
    CLASSES,
    KIND,
    NOISE,
    PRESETS,
    STAGE_NAMES,
    STAGES,
    JointNet,
    JointNetOptions,
    JointNetTraining,
    load_any,
    load_jointnet,
    shared_unet,
    synthetic_set,
    train,
    train_jointnet,
)
from engine.generation.samples import regenerate
from engine.generation.stages import checkpoint_path
from engine.generation.training_set import training_tiles
from engine.jobs.labels import add_labels, create_store, import_mask, rasterise, read_store, scene_grid
from engine.progress import Progress, silent

from conftest import TINY_NET, cancel_at

SAMPLES = Path(__file__).resolve().parents[1] / "resources" / "samples" / "arctic_s1"
SCENE = SAMPLES / "sample_1" / "raw_mosaic.tif"
TINY = dict(tile=32, net=TINY_NET, stage_steps=(3, 3, 3), batch_size=2, lr=1e-3, device="cpu")
FAST = dict(solver="dpm++", steps=3, batch_size=2, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def _pixels(col0: int, row0: int, col1: int, row1: int):
    """A box over sample_1's pixels, in the scene's CRS."""
    grid = scene_grid(SCENE)
    left, top = grid.transform.c, grid.transform.f
    return box(left + 25 * col0, top - 25 * row1, left + 25 * col1, top - 25 * row0)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """sample_1's analysts' slicks with two look-alikes drawn on its sea, one of them overlapping a slick."""
    path = create_store(tmp_path_factory.mktemp("store") / "labels.gpkg", "EPSG:4326")
    import_mask(path, SCENE, SAMPLES / "sample_1" / "labels_mosaic.png")
    target, _ = rasterise(read_store(path), SCENE, scene_grid(SCENE))
    row, col = (int(v[0]) for v in np.nonzero(target))  # a slick pixel
    add_labels(path, SCENE, [_pixels(40, 40, 72, 60), _pixels(col - 2, row - 2, col + 3, row + 3)], "lookalike",
               crs=scene_grid(SCENE).crs, author="t", origin="drawn")
    return path


@pytest.fixture(scope="module")
def generator(tmp_path_factory, store) -> Path:
    out = tmp_path_factory.mktemp("gen") / "jointnet.safetensors"
    train_jointnet(store, out, JointNetOptions(**TINY))
    return out


def _tiny(n_classes: int = 3) -> tuple[GeneratorCard, JointSet]:
    """Eight random 16-pixel tiles whose labels follow their brightness, and the card of a tiny SAR-JointNet."""
    rng = np.random.default_rng(0)
    tiles = rng.uniform(1, 255, (8, 16, 16)).astype(np.float32)
    labels = np.minimum(tiles // (256 / n_classes), n_classes - 1).astype(np.int64)
    data = JointSet.from_arrays(tiles, labels, np.ones((8, 16, 16)), n_classes)
    card = GeneratorCard("tiny", CLASSES[:n_classes], 16, 25.0, balancing_factor(data), shared_unet(TINY_NET, 16, n_classes),
                         noise=dict(NOISE), kind=KIND)
    return card, data


CONFIG = JointNetTraining(steps=(3, 3, 3), lr=(1e-3, 1e-3, 1e-4), batch_size=2)


def _weights(folder: Path, stage: int) -> dict[str, torch.Tensor]:
    return torch.load(checkpoint_path(folder, stage), weights_only=True)["weights"]


def _part(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_joining_layers_start_at_zero_so_each_net_computes_what_a_lone_unet_does(tmp_path):
    card, data = _tiny()
    z, t = torch.randn(2, 4, 16, 16), torch.tensor([10, 900])

    def lone(net: UNet2DModel, channels: int) -> UNet2DModel:
        alone = UNet2DModel(**{**card.unet, "in_channels": channels, "out_channels": channels})
        alone.load_state_dict(net.state_dict())
        return alone.eval()

    torch.manual_seed(0)
    fresh = JointNet(card.unet, 3).eval()
    joining = [*fresh.to_sar.parameters(), *fresh.to_label.parameters()]
    assert len(fresh.to_sar) == len(fresh.to_label) == 2 * len(TINY_NET["block_out_channels"]) + 1
    assert joining and not any(p.any() for p in joining)
    stage_1, _, _ = train(card, data, CONFIG, tmp_path, stage=1)
    for net in (fresh, stage_1):
        with torch.no_grad():
            joint = net(z, t).sample
            assert torch.equal(joint[:, :1], lone(net.sar, 1)(z[:, :1], t).sample)
            assert torch.equal(joint[:, 1:], lone(net.label, 3)(z[:, 1:], t).sample)
    # Once the joining layers have learnt, the label channels change SAR-Net's prediction.
    stage_2, _, _ = train(card, data, CONFIG, tmp_path, stage=2)
    with torch.no_grad():
        assert not torch.equal(stage_2(z, t).sample[:, :1], lone(stage_2.sar, 1)(z[:, :1], t).sample)


def test_stage_2_copies_sar_net_into_label_net_and_trains_only_label_net_and_the_joining_layers(tmp_path):
    card, data = _tiny()
    train(card, data, CONFIG, tmp_path / "a", stage=1)
    stage_1 = _weights(tmp_path / "a", 1)
    # With no stage 2 step, Label-Net is SAR-Net but for its input and output layers, made for the 3 label channels.
    (tmp_path / "b").mkdir()
    shutil.copy(checkpoint_path(tmp_path / "a", 1), tmp_path / "b")
    start, _, _ = train(card, data, replace(CONFIG, steps=(3, 0, 0)), tmp_path / "b", stage=2)
    sar, label = start.sar.state_dict(), start.label.state_dict()
    assert _same(sar, _part(stage_1, "sar."))
    assert _same({k: v for k, v in label.items() if not k.startswith(("conv_in.", "conv_out."))},
                 {k: v for k, v in sar.items() if not k.startswith(("conv_in.", "conv_out."))})
    assert label["conv_in.weight"].shape[1] == label["conv_out.weight"].shape[0] == 3
    # Stage 2 leaves every SAR-Net weight as stage 1 left it, and trains the rest.
    trained, history, _ = train(card, data, CONFIG, tmp_path / "a", stage=2)
    weights = trained.state_dict()
    assert _same(_part(weights, "sar."), _part(stage_1, "sar."))
    assert all(v.any() for k, v in weights.items() if k.startswith(("to_sar.", "to_label.")) and k.endswith("weight"))
    assert not torch.equal(weights["label.mid_block.resnets.0.conv1.weight"], label["mid_block.resnets.0.conv1.weight"])
    assert {h["stage"] for h in history} == {STAGE_NAMES[2]} and all(h["ce"] > 0 for h in history)
    # Stage 3 trains every layer.
    final, _, _ = train(card, data, CONFIG, tmp_path / "a", stage=3)
    assert not torch.equal(final.state_dict()["sar.conv_in.weight"], weights["sar.conv_in.weight"])


def test_a_stopped_stage_goes_on_from_its_checkpoint_as_if_it_had_never_stopped(tmp_path):
    card, data = _tiny()
    config = replace(CONFIG, steps=(41, 4, 4))  # stage 1 checkpoints every 2 steps; the stop at step 3 saves itself
    whole, history, _ = train(card, data, config, tmp_path / "whole")
    assert [h["stage"] for h in history].count(STAGE_NAMES[1]) == 21 and history[-1]["stage"] == STAGE_NAMES[3]
    for stage, stop in zip(STAGES, (3, 2, 2)):
        folder = tmp_path / f"stopped_{stage}"
        logs: list[str] = []
        with pytest.raises(Cancelled):  # Cancel pressed once step stop - 1 is reported stops after step stop
            train(card, data, config, folder, progress=cancel_at(STAGE_NAMES[stage], stop - 1, log=logs.append))
        state = torch.load(checkpoint_path(folder, stage), weights_only=True)
        assert state["step"] == stop and "optimiser" in state and f"stopped at step {stop} of" in logs[-1]
        assert not checkpoint_path(folder, stage + 1).exists()
        logs.clear()
        again, again_history, _ = train(card, data, config, folder, progress=Progress(log=logs.append))
        assert f"{STAGE_NAMES[stage]}: resuming at step {stop + 1}" in " ".join(logs)
        assert again_history == history and _same(again.state_dict(), whole.state_dict())
        finished = torch.load(checkpoint_path(folder, stage), weights_only=True)
        assert finished["step"] == finished["steps"] and "optimiser" not in finished  # a finished stage keeps weights only


def test_stages_asked_out_of_order_or_with_other_settings_say_what_to_run(tmp_path):
    card, data = _tiny()
    with pytest.raises(InputError, match="Stage 2 starts from a finished stage 1, and .* holds none.*--stage 1"):
        train(card, data, CONFIG, tmp_path, stage=2)
    with pytest.raises(Cancelled):
        train(card, data, CONFIG, tmp_path, stage=1, progress=cancel_at(STAGE_NAMES[1], 1))
    with pytest.raises(InputError, match="Stage 2 starts from a finished stage 1, and .* holds it at step 2 of 3"):
        train(card, data, CONFIG, tmp_path, stage=2)
    train(card, data, CONFIG, tmp_path, stage=1)
    with pytest.raises(InputError, match="Stage 3 starts from a finished stage 2"):
        train(card, data, CONFIG, tmp_path, stage=3)
    with pytest.raises(InputError, match=r"stage 1 checkpoint .* other settings or tiles \(differing: lr\)"):
        train(card, data, replace(CONFIG, lr=(5e-4, 1e-3, 1e-4)), tmp_path, stage=1)
    other = JointSet(data.x0.flip(0), data.target, data.known)
    with pytest.raises(InputError, match=r"differing: data_sha256"):
        train(card, other, CONFIG, tmp_path, stage=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage1.pt"]


def test_label_store_look_alikes_become_a_class_and_the_generator_file_says_its_kind(generator, store):
    target, known = rasterise(read_store(store), SCENE, scene_grid(SCENE), LABEL_CLASSES)
    slick_only, _ = rasterise(read_store(store), SCENE, scene_grid(SCENE))
    assert np.array_equal(target == 1, slick_only == 1)  # slick wins where a look-alike overlaps it
    assert (target[40:60, 40:72] == 2).mean() > 0.9 and set(np.unique(target)) == {0, 1, 2}
    data, _, _ = training_tiles(read_store(store), 32, 25.0, silent(), LABEL_CLASSES)
    card = read_generator_card(generator)
    assert card.kind == KIND and card.classes == ["sea", "slick", "look-alike"] and card.noise["beta_schedule"] == "squaredcos_cap_v2"
    assert card.b == pytest.approx(balancing_factor(data)) and data.target[:, 2].sum() > 0
    assert card.training["train_tiles"] == len(data) == 576 and card.training["steps"] == [3, 3, 3]
    assert len(card.training["stage_seconds"]) == 3 and card.training["seconds"] == pytest.approx(sum(card.training["stage_seconds"]), abs=0.2)
    assert [h["stage"] for h in card.training["history"]] == [STAGE_NAMES[s] for s in STAGES for _ in range(3)]
    net, loaded = load_any(generator)
    assert isinstance(net, JointNet) and loaded == card
    # Each loader refuses the other kind's file.
    with pytest.raises(ModelError, match=f"holds a '{KIND}' generator where a 'dakter' one is expected"):
        joint_ddpm.load_generator(generator)
    dakter = GeneratorCard("dakter", ["water", "slick"], 32, 25.0, 0.5, unet_config(TINY_NET, 32, 2))
    dakter_file = save_generator(build_unet(dakter), dakter, generator.parent / "dakter.safetensors")
    with pytest.raises(ModelError, match=f"holds a 'dakter' generator where a '{KIND}' one is expected.*--kind {KIND}"):
        load_jointnet(dakter_file)
    assert load_any(dakter_file)[1].kind == "dakter"


def test_samples_are_reproducible_from_their_seeds_and_land_in_a_sample_folder(tmp_path, generator):
    first, second = tmp_path / "first", tmp_path / "second"
    assert generate(generator, first, 3, seed=5, **FAST)["generated"] == 3
    generate(generator, second, 3, seed=5, **FAST)
    index = samples.read_index(first)
    (entry,) = index["generators"].values()
    assert entry["kind"] == KIND and entry["classes"] == ["sea", "slick", "look-alike"]
    assert [s["seed"] for s in index["samples"]] == [5, 6, 7]
    loaded = samples.load_samples(first)
    assert loaded.tiles.shape == (3, 1, 32, 32) and loaded.logits.shape == (3, 3, 32, 32) and 1 <= loaded.tiles.min()
    assert torch.allclose(loaded.soft_labels().sum(1), torch.ones(3, 32, 32))
    again = samples.load_samples(second)
    assert torch.equal(loaded.tiles, again.tiles) and torch.equal(loaded.logits, again.logits)
    assert not torch.equal(loaded.tiles[0], loaded.tiles[1])
    (first / "tiles" / "000002.npz").unlink()
    assert regenerate(first)["restored"] == ["000002"]
    assert regenerate(first, ["000001", "000002", "000003"])["identical"] == ["000001", "000002", "000003"]
    ddim = generate(generator, tmp_path / "ddim", 2, solver="ddim", steps=3, batch_size=2, device="cpu")
    assert ddim["solver"] == "ddim" and len(samples.load_samples(tmp_path / "ddim")) == 2


def test_the_job_runs_one_stage_at_a_time_and_synthetic_scenes_add_ship_and_land(tmp_path, store):
    out = tmp_path / "staged.safetensors"
    first = train_jointnet(store, out, JointNetOptions(**TINY, stage=1))
    assert first["generator"] is None and first["stages"] == [1] and not out.exists()
    assert sorted(p.name for p in (tmp_path / "staged.stages").iterdir()) == ["stage1.pt"]
    with pytest.raises(InputError, match="Stage 3 starts from a finished stage 2"):
        train_jointnet(store, out, JointNetOptions(**TINY, stage=3))
    logs: list[str] = []
    rest = train_jointnet(store, out, JointNetOptions(**TINY), Progress(log=logs.append))
    assert rest["generator"] == str(out) and read_generator_card(out).kind == KIND
    assert f"{STAGE_NAMES[1]}: finished in" in " ".join(logs)
    assert _same(_part(_weights(tmp_path / "staged.stages", 1), "sar."), _part(_weights(tmp_path / "staged.stages", 2), "sar."))
    synthetic = synthetic_set(8, 32, 25.0, 0, silent())
    assert synthetic.target.shape[1] == 5 and all(synthetic.target[:, c].sum() > 0 for c in range(5)) and synthetic.x0.min() > -1
    mixed = train_jointnet(store, tmp_path / "mixed.safetensors", JointNetOptions(**TINY, synthetic=8, stage=1))
    assert mixed["classes"] == CLASSES == ["sea", "slick", "look-alike", "ship", "land"]
    assert mixed["synthetic_tiles"] == len(synthetic) and mixed["train_tiles"] == 576


def test_command_line_options_are_each_kind_s_with_the_preset_s_where_not_given():
    def options(*args: str):
        return train_options(parse_args(["generator", "train", "--labels", "l", "--out", "o", *args]))

    cpu = torch.device("cpu")
    assert options() == GeneratorOptions() and options("--steps", "5").steps == 5
    assert options("--kind", KIND) == JointNetOptions() and options("--kind", KIND).training(cpu) == PRESETS["cpu"]
    assert options("--kind", KIND, "--preset", "paper").training(cpu) == PRESETS["paper"]
    tuned = options("--kind", KIND, "--preset", "paper", "--lr", "2e-4", "--batch-size", "8", "--stage-steps", "1", "2", "3")
    assert tuned.training(cpu) == replace(PRESETS["paper"], steps=(1, 2, 3), lr=(2e-4, 2e-4, 2e-5), batch_size=8)
    with pytest.raises(InputError, match="--preset, --synthetic: not options of a dakter generator"):
        options("--preset", "cpu", "--synthetic", "0")


def test_cli_trains_either_kind_and_generates_from_the_file_alone(tmp_path, store, capsys):
    def run(*args: str) -> dict:
        assert main(["--jsonl", *args]) == 0
        return json.loads(capsys.readouterr().out.splitlines()[-1])["data"]

    out = tmp_path / "cli.safetensors"
    result = run("generator", "train", "--kind", KIND, "--labels", str(store), "--out", str(out), "--tile", "32",
                 "--stage-steps", "1", "1", "1", "--batch-size", "1", "--device", "cpu")
    assert result["generator"] == str(out) and result["stage_steps"] == [1, 1, 1] and result["classes"] == ["sea", "slick", "look-alike"]
    assert run("generator", "info", str(out))["kind"] == KIND
    made = run("generate", "--generator", str(out), "--out", str(tmp_path / "samples"), "--n", "1", "--solver", "dpm++",
               "--steps", "2", "--device", "cpu")
    assert made["generated"] == 1
    for args, wrong in ((["--kind", "dakter", "--stage", "2"], "--stage: not options of a dakter generator"),
                        (["--kind", KIND, "--steps", "5", "--low-res-steps", "1"], f"--steps, --low-res-steps: not options of a {KIND} generator")):
        assert main(["--jsonl", "generator", "train", "--labels", str(store), "--out", str(tmp_path / "x.safetensors"), *args]) == 2
        error = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert error["kind"] == "InputError" and wrong in error["message"]
    assert not (tmp_path / "x.safetensors").exists() and not (tmp_path / "x.stages").exists()
