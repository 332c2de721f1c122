"""Student training on generated samples (DAKTer eqs. 3-6): the KD term, the mixed-batch loss, a student
fine-tune from a real tiny generator's samples on the real Arctic labels, refusals, and the unchanged
behaviour without samples."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.cli.main import main
from engine.errors import InputError, ModelError
from engine.generation import samples
from engine.generation.distill import mixed, open_folder, sample_count, student_tiles
from engine.generation.generator import GeneratorOptions, generate, train_generator
from engine.generation.joint_ddpm import read_generator_card
from engine.jobs.finetune import FinetuneOptions, finetune
from engine.models import training
from engine.models.eager import autocast
from engine.models.losses import StudentLoss, distillation_loss, slick_loss, soft_dice_loss
from engine.models.registry import BINARY_CLASSES, OSD_CLASSES, read_card
from engine.models.training import TileSet, training_dtype
from engine.progress import Progress

from conftest import TINY_NET, SMALL_MODEL as SMALL, single_thread

FAST = dict(tile=64, epochs=1, lr=1e-3, device="cpu", seed=5, val_fraction=0.5, train_layers="decoder")
"""Half the tiles validate: 1,280 slick pixels, enough to place a threshold, so a trained epoch can win over the parent."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _weights(path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, model_factory):
    return model_factory(tmp_path_factory.mktemp("base") / "small.safetensors", **SMALL)


@pytest.fixture(scope="module")
def generator(tmp_path_factory, arctic_store) -> Path:
    """A real (tiny, barely trained) generator of 64-pixel water/slick tiles at the model's 25 m."""
    out = tmp_path_factory.mktemp("gen") / "gen.safetensors"
    with single_thread():  # a network this small runs faster on one thread
        train_generator(arctic_store, out, GeneratorOptions(tile=64, net=TINY_NET, steps=2, low_res_steps=2, batch_size=2, device="cpu"))
    return out


@pytest.fixture(scope="module")
def sample_folder(tmp_path_factory, generator) -> Path:
    """Eight generated samples, of which 000002 and 000005 are discarded and their files deleted, so that
    reading either would fail."""
    folder = tmp_path_factory.mktemp("samples") / "samples"
    with single_thread():
        generate(generator, folder, 8, solver="dpm++", steps=2, batch_size=4, device="cpu")
    samples.set_kept(folder, ["000002", "000005"], False)
    for sample_id in ("000002", "000005"):
        (folder / "tiles" / f"{sample_id}.npz").unlink()
    return folder


def _hand_made_folder(path: Path, classes=BINARY_CLASSES, tile=64, pixel_size=25.0, n=3, seed=0) -> Path:
    """A valid sample folder written through engine.generation.samples' own API, with random tiles and logits."""
    entry = {"path": str(path / "gen.safetensors"), "name": "hand-made", "sha256": "0" * 64, "tile_size": tile,
             "classes": list(classes), "pixel_size": pixel_size, "b": 0.5}
    key = samples.prepare(path, entry)
    rng = np.random.default_rng(seed)
    made = [samples.NewSample(rng.integers(1, 256, (tile, tile), dtype=np.uint8), rng.normal(0, 3, (len(classes), tile, tile)),
                              i, [i], "ddim", 3, "cpu", 1) for i in range(n)]
    samples.add(path, key, made)
    return path


def test_kd_term_is_eq_4_by_hand_and_t_squared_scaled():
    T = 2.0
    teacher = [(0.3, 1.7), (2.0, -1.0), (0.0, 0.0)]  # generator logits (water, slick) of three pixels
    student = [2.0, -1.0, 0.5]
    valid = [1.0, 1.0, 0.0]  # the third pixel is unknown and must not count
    ce = []
    for (water, slick), s, v in zip(teacher, student, valid):
        q = math.exp(slick / T) / (math.exp(water / T) + math.exp(slick / T))  # eq. 3
        p = 1 / (1 + math.exp(-s / T))  # the student's softened slick probability
        ce.append(v * -(q * math.log(p) + (1 - q) * math.log(1 - p)))
    expected = T**2 * sum(ce) / sum(valid)  # eq. 4
    q = torch.softmax(torch.tensor(teacher).T.reshape(1, 2, 1, 3) / T, dim=1)[:, 1:]
    logits, mask = torch.tensor(student).reshape(1, 1, 1, 3), torch.tensor(valid).reshape(1, 1, 1, 3)
    assert float(distillation_loss(logits, q, mask, T)) == pytest.approx(expected, rel=1e-6)
    # The same soft labels as the sample folder makes them, and T^2 times the plain cross-entropy at T.
    generated = samples.GeneratedSet(["1"], torch.zeros(1, 1, 1, 3), torch.tensor(teacher).T.reshape(1, 2, 1, 3), BINARY_CLASSES, T)
    assert torch.allclose(generated.soft_labels()[:, 1:], q)
    for t in (1.0, 2.0, 4.0):
        plain = torch.nn.functional.binary_cross_entropy_with_logits(logits[..., :2] / t, q[..., :2])
        assert float(distillation_loss(logits, q, mask, t)) == pytest.approx(t**2 * float(plain), rel=1e-6)


def test_kd_gradient_vanishes_where_the_student_matches_the_softened_teacher():
    T = 2.0
    teacher = torch.randn(2, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    q = torch.softmax(teacher / T, dim=1)[:, 1:]
    valid = torch.ones(2, 1, 8, 8)
    matched = (teacher[:, 1:] - teacher[:, :1]).clone().requires_grad_()  # sigmoid(s / T) = q, for any T
    distillation_loss(matched, q, valid, T).backward()
    assert matched.grad.abs().max() < 1e-7
    other = (matched.detach() + 1).requires_grad_()
    distillation_loss(other, q, valid, T).backward()
    assert other.grad.abs().min() > 1e-5


def test_student_loss_weights_each_kind_by_its_share_and_ignores_unknown_pixels():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(4, 1, 16, 16, generator=gen)
    target = (torch.rand(4, 1, 16, 16, generator=gen) > 0.8).float()
    soft = torch.rand(4, 1, 16, 16, generator=gen)
    valid = torch.ones(4, 1, 16, 16)
    valid[0, :, :4] = 0  # unknown pixels of a real tile
    kind = torch.tensor([False, True, False, True])
    loss = StudentLoss(temperature=2.0)
    assert (loss.ce, loss.kd, loss.dice) == (1.0, 0.1, 0.5)  # supplementary B.2
    r, g = ~kind, kind
    # Eq. 6's CE weights slick pixels by the sea-to-slick ratio of the real tiles' known pixels.
    slick, known = (target[r] * valid[r]).sum(), valid[r].sum()
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits[r], target[r], pos_weight=(known - slick) / slick, reduction="none")
    eq6 = (bce * valid[r]).sum() / valid[r].sum() + 0.5 * soft_dice_loss(logits[r], target[r], valid[r])
    eq5 = 0.1 * distillation_loss(logits[g], soft[g], valid[g], 2.0) + 0.5 * soft_dice_loss(logits[g], target[g], valid[g])
    assert float(loss(logits, target, valid, soft, kind)) == pytest.approx(float(0.5 * eq6 + 0.5 * eq5), rel=1e-6)
    assert float(loss(logits, target, valid)) == pytest.approx(float(loss.real(logits, target, valid)))
    # Whatever a model says or a label holds on unknown pixels changes no term, nor any gradient there.
    changed, other_target = logits.clone().requires_grad_(), target.clone()
    with torch.no_grad():
        changed[0, :, :4] += 5
    other_target[0, :, :4] = 1 - other_target[0, :, :4]
    again = loss(changed, other_target, valid, soft, kind)
    assert again.item() == pytest.approx(float(loss(logits, target, valid, soft, kind)), rel=1e-6)
    again.backward()
    assert torch.equal(changed.grad[0, :, :4], torch.zeros(1, 4, 16))


@pytest.mark.parametrize("augment", [training.augment, training.paper_augment])
def test_soft_labels_move_with_their_tiles_under_augmentation(augment):
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(3, 1, 32, 32, generator=gen) * 254 + 1
    soft = torch.rand(3, 1, 32, 32, generator=gen)
    data = TileSet(x, (soft > 0.5).float(), torch.ones(3, 1, 32, 32), soft, torch.tensor([True, False, True]))
    torch.manual_seed(0)  # paper_augment draws from torch's global generator
    out = training.augmented(data, training.TrainConfig(augment=augment), gen)
    assert not torch.equal(out.soft, soft) and torch.equal(out.y, (out.soft > 0.5).float())
    assert torch.equal(out.generated, data.generated) and out.x.shape == x.shape


def test_osd_samples_teach_oil_as_slick_and_the_rest_as_water(tmp_path, small_model):
    folder = _hand_made_folder(tmp_path / "osd", classes=OSD_CLASSES, n=3)
    logs = []
    checked = open_folder(folder, read_card(small_model), 64, Progress(log=logs.append))
    assert checked.slick == OSD_CLASSES.index("oil") and checked.kept == 3
    assert any("sea, look-alike, ship, land teach the model's water, oil its slick" in line for line in logs)
    tiles, lineage = student_tiles(checked, 2, Progress())
    data = samples.load_samples(folder, 2)
    assert torch.allclose(tiles.soft, torch.softmax(data.logits / 2, dim=1)[:, 1:2])
    assert torch.equal(tiles.y, (data.logits.argmax(1, keepdim=True) == 1).float())
    assert torch.equal(tiles.x, data.tiles) and bool(tiles.generated.all()) and lineage["slick_class"] == "oil"
    hard, hard_lineage = student_tiles(checked, 2, Progress(), "hard")  # the paper's ablation: one-hot KD targets
    assert torch.equal(hard.soft, tiles.y) and torch.equal(hard.y, tiles.y) and (lineage["labels"], hard_lineage["labels"]) == ("soft", "hard")
    real = TileSet.from_arrays([np.full((64, 64), 9.0)], [np.ones((64, 64))])
    both = mixed(real, tiles)
    assert both.generated.tolist() == [False, True, True] and torch.equal(both.soft[0], real.y[0])
    assert sample_count(checked, 3, 100) == 3 and sample_count(checked, None, 2) == 2
    with pytest.raises(InputError, match=r"holds 3 kept samples; 5 are asked for \(as many as the training tiles, the default\)"):
        sample_count(checked, None, 5)


def _reference_batch_loss(model, data, idx, config, gen):
    """``training.batch_loss`` as it was before student training, kept as the reference."""
    device = torch.device(config.device)
    x, y, v = (t.to(device) for t in config.augment(data.x[idx], data.y[idx], data.valid[idx], gen))
    with autocast(device, training_dtype(device)):
        logits = model(x * config.input_scale)
    return slick_loss(logits.float(), y, v)


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory, small_model, arctic_store):
    """A fine-tune without samples."""
    return finetune(small_model, arctic_store, tmp_path_factory.mktemp("plain") / "plain.safetensors", FinetuneOptions(**FAST))


def test_without_samples_fine_tuning_is_bit_identical_to_before(tmp_path, small_model, arctic_store, plain_run, monkeypatch):
    monkeypatch.setattr(training, "batch_loss", _reference_batch_loss)
    reference = finetune(small_model, arctic_store, tmp_path / "reference.safetensors", FinetuneOptions(**FAST))
    ours, theirs = _weights(plain_run.model), _weights(reference.model)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert plain_run.history == reference.history and plain_run.val_dice_before == reference.val_dice_before
    assert plain_run.n_generated == 0 and plain_run.generated is None and "generated" not in read_card(plain_run.model).lineage


def test_student_fine_tune_learns_from_kept_samples_and_records_them(tmp_path, small_model, arctic_store, generator, sample_folder,
                                                                     plain_run, capsys):
    index_before = (sample_folder / "index.json").read_bytes()
    out = tmp_path / "student.safetensors"
    args = ["--jsonl", "finetune", "--base", str(small_model), "--labels", str(arctic_store), "--out", str(out), "--tile", "64",
            "--epochs", "1", "--lr", "1e-3", "--device", "cpu", "--seed", "5", "--val-fraction", "0.5", "--generated", str(sample_folder), "--n-generated", "6"]
    assert main(args) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    result = events[-1]["data"]
    assert events[-1]["event"] == "result" and result["generated"] == str(sample_folder) and result["n_generated"] == 6
    # Validation is on the same real tiles as without samples: the parent scores the same there.
    assert result["train_tiles"] == plain_run.train_tiles and result["val_tiles"] == plain_run.val_tiles
    assert result["val_dice_before"] == plain_run.val_dice_before
    # Each epoch goes through the real and the generated tiles: (real + 6) // 4 steps.
    steps = {e["total"] for e in events if e["event"] == "progress" and e["stage"] == "training"}
    assert steps == {(plain_run.train_tiles + 6) // 4}
    assert any(e["event"] == "log" and "6 generated samples from samples, soft labels at T = 2" in e["message"] for e in events)
    lineage = read_card(out).lineage
    generated = lineage["generated"]
    assert generated["ids"] == ["000001", "000003", "000004", "000006", "000007", "000008"]  # never a discarded one
    assert generated["n"] == 6 and generated["folder"] == str(sample_folder.resolve())
    assert generated["index_sha256"] == _sha256(sample_folder / "index.json")
    assert generated["generators"] == [{"name": read_generator_card(generator).name, "sha256": _sha256(generator)}]
    assert (generated["temperature"], generated["lambda_ce"], generated["lambda_kd"], generated["lambda_dice"]) == (2.0, 1.0, 0.1, 0.5)
    assert generated["slick_class"] == "slick" and lineage["train_tiles"] == plain_run.train_tiles
    # Same seed, same real tiles: only the samples and the loss differ, and the weights with them.
    student, plain = _weights(out), _weights(plain_run.model)
    assert not all(torch.equal(student[k], plain[k]) for k in student)
    assert (sample_folder / "index.json").read_bytes() == index_before


def _version_2(folder: Path) -> Path:
    index = json.loads((folder / "index.json").read_text())
    index["version"] = 2
    (folder / "index.json").write_text(json.dumps(index))
    return folder


@pytest.mark.parametrize("make, options, error, message, cut", [
    (lambda p: _hand_made_folder(p, tile=32), {}, InputError, "are 32-pixel tiles; this fine-tuning cuts 64-pixel tiles.*--tile 32", False),
    (lambda p: _hand_made_folder(p, classes=["sea", "look-alike", "ship"]), {}, InputError, "sea, look-alike, ship: none of them is a slick", False),
    (lambda p: _version_2(_hand_made_folder(p)), {}, InputError, "format version 2.*reads version 1", False),
    (lambda p: _hand_made_folder(p, pixel_size=40.0), {}, InputError, "made its samples at 40 m pixels; .* works at 25 m", False),
    (lambda p: p, {}, InputError, "Sample folder not found", False),
    (lambda p: _hand_made_folder(p, n=3), {"n_generated": 4}, InputError, "holds 3 kept samples; 4 are asked for\\.", True),
    (lambda p: _hand_made_folder(p, n=3), {}, InputError, "holds 3 kept samples; \\d+ are asked for \\(as many as the training tiles", True),
])
def test_unusable_sample_folders_are_refused_before_training_and_nothing_is_written(
    tmp_path, small_model, arctic_store, make, options, error, message, cut
):
    folder = make(tmp_path / "samples")
    files = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    stages = []
    out = tmp_path / "out" / "student.safetensors"
    with pytest.raises(error, match=message):
        finetune(small_model, arctic_store, out, FinetuneOptions(**FAST, generated=folder, **options), Progress(lambda s, *_: stages.append(s)))
    assert "training" not in stages and ("tiles" in stages) == cut  # folder checks come before any tile is cut
    assert not out.parent.exists() and {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == files


def test_models_and_options_that_cannot_take_samples_are_refused(tmp_path, arctic_store, model_factory, small_model):
    folder = _hand_made_folder(tmp_path / "samples")
    ships = model_factory(tmp_path / "ships.safetensors", **{**SMALL, "classes": ["water", "ship"]})
    with pytest.raises(ModelError, match="predicts water / ship, not slick"):
        finetune(ships, arctic_store, tmp_path / "a.safetensors", FinetuneOptions(**FAST, generated=folder))
    with pytest.raises(InputError, match="--n-generated 3 needs a sample folder"):
        finetune(small_model, arctic_store, tmp_path / "b.safetensors", FinetuneOptions(**FAST, n_generated=3))
    with pytest.raises(InputError, match="--n-generated 0 needs a sample folder and at least one"):
        finetune(small_model, arctic_store, tmp_path / "c.safetensors", FinetuneOptions(**FAST, generated=folder, n_generated=0))
    with pytest.raises(InputError, match="--generated-labels hard needs a sample folder"):
        finetune(small_model, arctic_store, tmp_path / "d.safetensors", FinetuneOptions(**FAST, generated_labels="hard"))
    with pytest.raises(InputError, match="--generated-labels teacher needs a sample folder and is one of soft, hard"):
        finetune(small_model, arctic_store, tmp_path / "e.safetensors", FinetuneOptions(**FAST, generated=folder, generated_labels="teacher"))
    assert not list(tmp_path.glob("[abcde].safetensors"))
