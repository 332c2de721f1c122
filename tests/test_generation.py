"""The DAKTer joint generator on real Arctic labels with tiny real networks: b, loss, training, sampling,
the sample folder, regeneration, cancel and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from shapely.geometry import box

from engine.cli.main import main
from engine.errors import Cancelled, InputError, ModelError, OutputError
from engine.generation import samples
from engine.generation.generator import GeneratorOptions, generate, train, train_generator
from engine.generation.joint_ddpm import (
    GeneratorCard,
    GeneratorTraining,
    JointSet,
    balancing_factor,
    build_unet,
    joint_loss,
    load_generator,
    mean_power,
    noise_schedule,
    read_generator_card,
    sample,
    save_generator,
    unet_config,
)
from engine.generation.samples import regenerate
from engine.generation.training_set import MIN_TILES, training_tiles
from engine.jobs.labels import add_labels, add_reviewed, create_store, read_store, scene_grid
from engine.models.registry import OSD_CLASSES, list_models, read_card
from engine.progress import Progress

from conftest import TINY_NET, cancel_at

SAMPLES = Path(__file__).resolve().parents[1] / "resources" / "samples" / "arctic_s1"
TINY = dict(tile=32, net=TINY_NET, steps=3, low_res_steps=3, batch_size=2, lr=1e-3, device="cpu")
FAST = dict(solver="dpm++", steps=3, batch_size=2, device="cpu")


pytestmark = pytest.mark.usefixtures("one_thread")


def _scene(sample: str) -> Path:
    return SAMPLES / sample / "raw_mosaic.tif"


@pytest.fixture(scope="module")
def generator(tmp_path_factory, arctic_store) -> Path:
    out = tmp_path_factory.mktemp("gen") / "gen.safetensors"
    train_generator(arctic_store, out, GeneratorOptions(**TINY))
    return out


def _arrays(seed: int, n: int, size: int, classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tiles = rng.uniform(1, 255, (n, size, size)).astype(np.float32)
    labels = rng.integers(0, classes, (n, size, size))
    return tiles, labels, np.ones((n, size, size), dtype=np.uint8)


def test_balancing_factor_follows_eq_16():
    ones = np.ones((2, 16, 16), dtype=np.uint8)
    labels = np.zeros((2, 16, 16), dtype=np.int64)
    labels[:, :, 8:] = 1
    # A constant image of value c: all its power is in the DC term, |c * H * W|^2, averaged over H * W
    # frequencies; a +-1 mask has power H * W per channel. So b = |c|.
    constant = JointSet.from_arrays(np.full((2, 16, 16), 191.25, dtype=np.float32), labels, ones, 2)  # x0 = 0.5
    assert mean_power(constant.x0) == pytest.approx(0.25 * 16 * 16)
    assert mean_power(constant.labels()) == pytest.approx(16 * 16)
    assert balancing_factor(constant) == pytest.approx(0.5)
    # Scaling the image by a scales b by a (eq. 10); the label's power does not change.
    tiles, _, _ = _arrays(0, 2, 16, 2)
    data = JointSet.from_arrays(tiles, labels, ones, 2)
    scaled = JointSet(data.x0 * 0.3, data.target, data.known)
    assert balancing_factor(scaled) == pytest.approx(0.3 * balancing_factor(data))
    # And the literal DFT definition, computed independently.
    spectrum = np.fft.fft2(tiles / 127.5 - 1)
    assert balancing_factor(data) == pytest.approx(np.sqrt(np.mean(np.abs(spectrum) ** 2) / (16 * 16)))


def test_halved_labels_hold_class_fractions_of_known_pixels():
    tiles, _, _ = _arrays(1, 1, 8, 2)
    labels = np.zeros((1, 8, 8), dtype=np.int64)
    labels[0, :, 4:] = 1
    known = np.ones((1, 8, 8), dtype=np.uint8)
    known[0, :, :2] = 0
    half = JointSet.from_arrays(tiles, labels, known, 2).halved()
    assert half.x0.shape == (1, 1, 4, 4) and half.target.shape == (1, 2, 4, 4)
    assert torch.equal(half.known[0, 0, :, 0], torch.zeros(4)) and torch.equal(half.known[0, 0, :, 1:], torch.ones(4, 3))
    sums = half.target.sum(1)[0]
    assert torch.allclose(sums[:, 1:], torch.ones(4, 3)) and torch.equal(sums[:, 0], torch.zeros(4))
    assert torch.allclose(half.target[0, 1, :, 3], torch.ones(4)) and 0 < float(half.target[0, 1, 0, 2]) < 1


def test_joint_loss_falls_on_a_tiny_five_class_set_and_training_is_seeded():
    # Four 8 x 8 tiles, each a sea of one brightness holding a square of another class and brightness.
    tiles = np.full((4, 8, 8), 150, dtype=np.float32)
    labels = np.zeros((4, 8, 8), dtype=np.int64)
    for i in range(4):
        rows, cols = slice(i // 2 * 4, i // 2 * 4 + 4), slice(i % 2 * 4, i % 2 * 4 + 4)
        tiles[i, rows, cols] = 30 + 60 * i
        labels[i, rows, cols] = 1 + i
    data = JointSet.from_arrays(tiles, labels, np.ones((4, 8, 8)), len(OSD_CLASSES))
    card = GeneratorCard("overfit", list(OSD_CLASSES), 8, 25.0, balancing_factor(data), unet_config(TINY_NET, 8, len(OSD_CLASSES)))
    config = GeneratorTraining(steps=30, low_res_steps=0, batch_size=4, lr=3e-3)

    def fixed_loss(net) -> float:  # the same timesteps and noise before and after
        with torch.no_grad():
            return float(joint_loss(net, noise_schedule(card), data, card.b, torch.Generator().manual_seed(7))[0])

    before = fixed_loss(build_unet(card))
    net, history, _ = train(card, data, config)
    assert fixed_loss(net) < 0.7 * before
    assert history[-1]["loss"] < history[0]["loss"] and {h["stage"] for h in history} == {"training"}
    again, _, _ = train(card, data, GeneratorTraining(steps=3, low_res_steps=2, batch_size=2))
    twice, _, _ = train(card, data, GeneratorTraining(steps=3, low_res_steps=2, batch_size=2))
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), twice.state_dict().values()))
    # Five-class sampling: logits for every class, soft labels summing to 1.
    x, logits = sample(net, card, [0, 1], "ddim", 4)
    assert x.shape == (2, 1, 8, 8) and logits.shape == (2, 5, 8, 8) and x.abs().max() <= 1
    assert torch.allclose(torch.softmax(logits / 2, 1).sum(1), torch.ones(2, 8, 8))


def test_batches_draw_slick_tiles_at_the_asked_share():
    # Ten tiles, one of which holds a slick: uniform batches would draw it a tenth of the time.
    labels = np.zeros((10, 8, 8), dtype=np.int64)
    labels[3, 2:4, 2:4] = 1
    data = JointSet.from_arrays(np.full((10, 8, 8), 100.0), labels, np.ones((10, 8, 8)), 2)
    draws = torch.multinomial(GeneratorTraining(slick_share=0.5).tile_weights(data, 1), 20_000, replacement=True,
                              generator=torch.Generator().manual_seed(0))
    assert 0.48 < float((draws == 3).float().mean()) < 0.52
    assert torch.equal(GeneratorTraining(slick_share=None).tile_weights(data, 1), torch.ones(10, dtype=torch.float64))
    no_slick = JointSet.from_arrays(np.full((4, 8, 8), 100.0), np.zeros((4, 8, 8), dtype=np.int64), np.ones((4, 8, 8)), 2)
    assert torch.equal(GeneratorTraining().tile_weights(no_slick, 1), torch.ones(4, dtype=torch.float64))


def test_generator_trains_from_a_real_label_store(generator, arctic_store):
    card = read_generator_card(generator)
    data, skipped, scenes = training_tiles(read_store(arctic_store), 32, 25.0, Progress())
    assert len(data) == 24 * 24 and skipped == 0 and scenes == [str(_scene("sample_1"))]
    assert card.b == pytest.approx(balancing_factor(data)) and 0.2 < card.b < 1
    assert card.classes == ["water", "slick"] and card.tile_size == 32 and card.pixel_size == 25.0
    assert card.unet["in_channels"] == card.unet["out_channels"] == 3
    training = card.training
    assert training["labels"]["sha256"] == read_store(arctic_store).sha256 and training["train_tiles"] == 576
    assert training["b_from"] == "tiles" and [h["stage"] for h in training["history"]][-1] == "training"
    assert training["steps"] == 3 and training["low_res_steps"] == 3 and training["seed"] == 0 and training["slick_share"] == 0.5
    # Never mistaken for a segmentation model, nor listed as one.
    with pytest.raises(ModelError, match="sample generator, not a segmentation model"):
        read_card(generator)
    assert generator.resolve() not in [p for p, _ in list_models((generator.parent,))]


def test_generate_writes_whole_samples_the_student_can_read(tmp_path, generator):
    folder = tmp_path / "samples"
    result = generate(generator, folder, 3, **FAST)
    assert result["generated"] == 3 and result["total"] == result["kept"] == 3 and result["samples_per_minute"] > 0
    index = json.loads((folder / "index.json").read_text())
    assert index["format"] == "slick-mapper-samples" and index["version"] == 1 and index["temperature"] == 2.0
    (key, entry), = index["generators"].items()
    assert entry["b"] == read_generator_card(generator).b and entry["path"] == str(generator.resolve())
    assert [s["seed"] for s in index["samples"]] == [0, 1, 2]
    assert [s["batch_seeds"] for s in index["samples"]] == [[0, 1], [0, 1], [2]]
    for record in index["samples"]:
        with np.load(folder / "tiles" / f"{record['id']}.npz") as npz:
            assert npz["tile"].dtype == np.uint8 and npz["tile"].shape == (32, 32) and npz["tile"].min() >= 1
            assert npz["logits"].dtype == np.float16 and npz["logits"].shape == (2, 32, 32)
            assert record["slick_fraction"] == pytest.approx(float((npz["logits"].argmax(0) == 1).mean()), abs=1e-4)
        preview = Image.open(folder / "previews" / f"{record['id']}.png")
        assert preview.mode == "RGB" and preview.size == (32, 32)
    assert not list(folder.rglob(".slickmapper-tmp-*"))
    # Appending continues the seeds; discarded samples never reach training.
    generate(generator, folder, 1, **FAST)
    samples.set_kept(folder, ["000002"], False)
    loaded = samples.load_samples(folder)
    assert loaded.ids == ["000001", "000003", "000004"] and loaded.classes == ["water", "slick"]
    assert loaded.tiles.shape == (3, 1, 32, 32) and loaded.tiles.dtype == torch.float32 and 1 <= loaded.tiles.min()
    assert loaded.logits.shape == (3, 2, 32, 32)
    assert torch.allclose(loaded.soft_labels().sum(1), torch.ones(3, 32, 32))
    assert loaded.hard_labels().shape == (3, 32, 32)
    assert len(samples.load_samples(folder, kept_only=False)) == 4 and len(samples.load_samples(folder, n=2)) == 2
    summary = samples.summary(folder)
    assert (summary["total"], summary["kept"], summary["discarded"]) == (4, 3, 1)
    assert [s["seed"] for s in summary["samples"]] == [0, 1, 2, 3]
    with pytest.raises(InputError, match="already holds samples of seeds 0, 1"):
        generate(generator, folder, 2, seed=0, **FAST)
    with pytest.raises(InputError, match="No sample 000099"):
        samples.set_kept(folder, ["000001", "000099"], False)
    assert samples.summary(folder)["kept"] == 3


def test_regeneration_is_bit_identical_and_restores_lost_files(tmp_path, generator):
    folder = tmp_path / "samples"
    generate(generator, folder, 3, **FAST)
    lost = folder / "tiles" / "000002.npz"
    original = samples.read_sample(folder, "000002")
    lost.unlink()
    result = regenerate(folder)
    assert result["restored"] == ["000002"] and result["checked"] == ["000002"]
    restored = samples.read_sample(folder, "000002")
    assert np.array_equal(original[0], restored[0]) and np.array_equal(original[1], restored[1])
    result = regenerate(folder, ["000001", "000003"])
    assert result["identical"] == ["000001", "000003"] and result["different"] == [] and result["restored"] == []
    moved = tmp_path / "moved.safetensors"
    shutil.copy(generator, moved)
    assert regenerate(folder, ["000003"], generator_path=moved)["identical"] == ["000003"]
    other = tmp_path / "other.safetensors"
    net, card = load_generator(generator)
    card.name = "another"
    save_generator(net, card, other)
    with pytest.raises(ModelError, match="not the generator that made these samples"):
        regenerate(folder, ["000001"], generator_path=other)


def test_cancel_mid_training_leaves_no_file(tmp_path, arctic_store):
    out = tmp_path / "out" / "gen.safetensors"
    with pytest.raises(Cancelled):
        train_generator(arctic_store, out, GeneratorOptions(**TINY), cancel_at("training (low res)", 2))
    assert not out.exists() and not list(tmp_path.rglob("*.safetensors"))


def test_cancel_mid_generation_keeps_only_whole_samples(tmp_path, generator):
    folder = tmp_path / "samples"
    logs = []
    progress = cancel_at("generating", 2 * 3 + 2 * 2, log=logs.append)  # the second batch of two, at its second step
    with pytest.raises(Cancelled):
        generate(generator, folder, 5, progress=progress, **FAST)
    index = samples.read_index(folder)
    assert [s["id"] for s in index["samples"]] == ["000001", "000002"]
    assert sorted(p.name for p in (folder / "tiles").iterdir()) == ["000001.npz", "000002.npz"]
    assert sorted(p.name for p in (folder / "previews").iterdir()) == ["000001.png", "000002.png"]
    assert not list(folder.rglob(".slickmapper-tmp-*")) and "the 2 samples finished before are kept" in logs[-1]
    assert len(samples.load_samples(folder)) == 2


def _one_tile_store(tmp_path: Path) -> Path:
    path = create_store(tmp_path / "small.gpkg", "EPSG:32636")
    grid = scene_grid(_scene("sample_1"))
    left, top = grid.transform.c, grid.transform.f

    def pixels(col0, row0, col1, row1):
        return box(left + 25 * col0, top - 25 * row1, left + 25 * col1, top - 25 * row0)

    add_labels(path, _scene("sample_1"), [pixels(150, 280, 170, 290)], "slick", crs="EPSG:32636", author="t", origin="drawn")
    add_reviewed(path, _scene("sample_1"), [pixels(128, 256, 256, 320)], crs="EPSG:32636", author="t")  # 8 tiles of 32
    return path


def test_too_few_tiles_say_how_many_are_needed(tmp_path):
    stages = []
    out = tmp_path / "gen.safetensors"
    with pytest.raises(InputError, match=f"Only 8 of the 8 labelled 32-pixel tiles .* at least {MIN_TILES}"):
        train_generator(_one_tile_store(tmp_path), out, GeneratorOptions(**TINY), Progress(lambda s, *_: stages.append(s)))
    assert not any(s.startswith("training") for s in stages) and not out.exists()


def test_bad_generators_and_folders_are_refused_before_work(tmp_path, generator, arctic_store, model_factory):
    existing = tmp_path / "existing.safetensors"
    existing.write_bytes(b"someone's generator")
    with pytest.raises(OutputError, match="exists already"):
        train_generator(arctic_store, existing, GeneratorOptions(**TINY))
    assert existing.read_bytes() == b"someone's generator"
    with pytest.raises(InputError, match="Tile size 34 does not fit this network: it must be a multiple of 4"):
        train_generator(arctic_store, tmp_path / "a.safetensors", GeneratorOptions(**{**TINY, "tile": 34}))
    with pytest.raises(InputError, match="Slick share 1.0 must lie between 0 and 1"):
        train_generator(arctic_store, tmp_path / "a.safetensors", GeneratorOptions(**{**TINY, "slick_share": 1.0}))
    # A segmentation model, or a generator file of another format version, is no generator.
    model = model_factory(tmp_path / "model.safetensors", tile_size=256)
    with pytest.raises(ModelError, match="segmentation model, not a sample generator"):
        generate(model, tmp_path / "s1", 1, **FAST)
    net, card = load_generator(generator)
    card.version = 2
    future = save_generator(net, card, tmp_path / "future.safetensors")
    with pytest.raises(ModelError, match="version 2.*reads version 1"):
        generate(future, tmp_path / "s2", 1, **FAST)
    # A folder of another tile size or class count, of another generator, of another version, or no folder of ours.
    folder = tmp_path / "samples"
    generate(generator, folder, 1, **FAST)
    before = (folder / "index.json").read_bytes()
    for field, value in (("tile_size", 64), ("classes", list(OSD_CLASSES))):
        net, card = load_generator(generator)
        setattr(card, field, value)
        card.unet = unet_config(TINY_NET, card.tile_size, len(card.classes))
        net = type(net)(**card.unet)
        other = save_generator(net, card, tmp_path / f"other_{field}.safetensors")
        with pytest.raises(InputError, match="one folder holds samples of one shape"):
            generate(other, folder, 1, mix_generators=True, **FAST)
    net, card = load_generator(generator)
    card.name = "a second generator"
    second = save_generator(net, card, tmp_path / "second.safetensors")
    with pytest.raises(InputError, match="samples of another generator"):
        generate(second, folder, 1, **FAST)
    assert (folder / "index.json").read_bytes() == before
    assert generate(second, folder, 1, mix_generators=True, **FAST)["total"] == 2
    index = json.loads((folder / "index.json").read_text())
    index["version"] = 2
    (folder / "index.json").write_text(json.dumps(index))
    with pytest.raises(InputError, match="format version 2"):
        generate(generator, folder, 1, **FAST)
    with pytest.raises(InputError, match="format version 2"):
        samples.load_samples(folder)
    foreign = tmp_path / "holiday_photos"
    foreign.mkdir()
    (foreign / "beach.jpg").write_bytes(b"jpeg")
    with pytest.raises(OutputError, match="other files and no sample index"):
        generate(generator, foreign, 1, **FAST)
    assert [p.name for p in foreign.iterdir()] == ["beach.jpg"]


def test_cli_trains_generates_and_manages_samples(tmp_path, arctic_store, generator, capsys):
    def run(*args: str) -> dict:
        assert main(["--jsonl", *args]) == 0
        events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert events[-1]["event"] == "result"
        return events

    out = tmp_path / "cli.safetensors"
    events = run("generator", "train", "--labels", str(arctic_store), "--out", str(out), "--tile", "32", "--steps", "1",
                 "--low-res-steps", "1", "--batch-size", "1", "--b", "0.1", "--device", "cpu", "--seed", "4")
    result = events[-1]["data"]
    assert result["generator"] == str(out) and result["b"] == 0.1 and result["b_from"] == "given" and result["train_tiles"] == 576
    assert {"training (low res)", "training", "saving", "done"} <= {e["stage"] for e in events if e["event"] == "progress"}
    assert any(e["event"] == "log" and "b = 0.1000 (given)" in e["message"] for e in events)
    card = run("generator", "info", str(out))[-1]["data"]
    assert card["b"] == 0.1 and card["training"]["seed"] == 4 and card["unet"]["block_out_channels"] == [32, 64, 64]
    folder = tmp_path / "samples"
    events = run("generate", "--generator", str(generator), "--out", str(folder), "--n", "2", "--solver", "dpm++",
                 "--steps", "2", "--device", "cpu")
    assert events[-1]["data"]["generated"] == 2 and any(e.get("stage") == "generating" for e in events)
    assert run("samples", "discard", str(folder), "000001")[-1]["data"]["kept"] == 1
    assert run("samples", "keep", str(folder), "000001")[-1]["data"]["kept"] == 2
    summary = run("samples", "summary", str(folder))[-1]["data"]
    assert summary["total"] == 2 and Path(summary["samples"][0]["preview"]).is_file()
    assert run("samples", "regenerate", str(folder), "000002")[-1]["data"]["identical"] == ["000002"]
    assert main(["--jsonl", "generate", "--generator", str(out), "--out", str(folder), "--n", "1"]) == 2
    error = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert error["event"] == "error" and error["kind"] == "InputError" and "another generator" in error["message"]


def test_commands_that_need_no_generator_do_not_import_diffusers():
    code = "import sys, engine.cli.main; print('diffusers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # it takes seconds, which every plugin job would wait for
