"""Masked-image pretraining: what the network is shown and asked to restore, and what it hands on."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.data.real_scenes import SceneArrays
from engine.errors import Cancelled
from engine.models.registry import read_weights
from engine.models.selfsupervised import MaskedRecipe, blank_patches, masked_pretrain, multilook
from engine.progress import Progress

from conftest import SMALL_MODEL, cancel_at

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = MaskedRecipe(tiles=8, tile=64, epochs=2, batch_size=4)


def _scene() -> SceneArrays:
    """Real-looking sea: a gradient with speckle, a no-data corner, one dark strand."""
    rng = np.random.default_rng(0)
    values = np.clip(100 + np.linspace(-30, 30, 200)[None, :] + rng.gamma(4, 5, (200, 200)) - 20, 1, 255).astype(np.float32)
    values[:40, :40] = 0
    slick = np.zeros((200, 200), bool)
    slick[100:104, 50:150] = True
    values[slick] *= 0.4
    return SceneArrays("scene", values, slick, values > 0, 25.0)


def test_blanked_patches_take_the_crop_s_level_and_no_data_stays_no_data():
    x = torch.from_numpy(_scene().values[:128, :128].copy())[None, None]
    shown, hidden = blank_patches(x, replace(RECIPE, masked=0.5), torch.Generator().manual_seed(0))
    data = x > 0
    level = x[data].mean()
    assert torch.equal(shown[~data], x[~data])  # no data is never blanked: it stays 0
    assert not hidden[~data].any()
    assert torch.allclose(shown[hidden], level.expand(int(hidden.sum())))
    assert torch.equal(shown[~hidden], x[~hidden])
    share = hidden.sum() / data.sum()
    assert 0.3 < share < 0.7
    # blanking follows whole 16-px patches: each patch is blanked everywhere it has data, or nowhere
    patches = hidden[0, 0].reshape(8, 16, 8, 16).any(dim=(1, 3))
    full = (hidden | ~data)[0, 0].reshape(8, 16, 8, 16).all(dim=(1, 3))
    assert torch.equal(patches, full & patches)


def test_the_target_is_the_multilooked_sea_and_ignores_no_data():
    x = torch.zeros(1, 1, 9, 9)
    x[..., :, 4:] = 100.0
    x[..., 0, 8] = 130.0
    out = multilook(x, 3)
    assert out[0, 0, 4, 6] == pytest.approx(100.0)  # inside the data, away from the odd pixel
    assert out[0, 0, 4, 4] == pytest.approx(100.0)  # at the no-data edge: the no-data pixels do not pull it down
    assert out[0, 0, 1, 7] == pytest.approx((8 * 100 + 130) / 9)


def test_only_the_encoder_changes_and_a_stopped_run_resumes_to_the_same_weights(tmp_path, model_factory):
    parent = model_factory(tmp_path / "parent.safetensors", **SMALL_MODEL)
    straight = tmp_path / "straight.safetensors"
    report = masked_pretrain(straight, parent, [_scene()], RECIPE, "cpu", Progress(), tmp_path / "a.pt")
    assert len(report["masked_error"]) == RECIPE.epochs
    before, after = read_weights(parent), read_weights(straight)
    changed = {k for k in before if not torch.equal(before[k].half(), after[k])}
    assert changed and all(k.startswith("encoder.") for k in changed)
    assert any(k.startswith("encoder.") and k.endswith("weight") for k in changed)

    checkpoint = tmp_path / "b.pt"
    with pytest.raises(Cancelled):  # stopped in the second epoch
        masked_pretrain(tmp_path / "stopped.safetensors", parent, [_scene()], RECIPE, "cpu", cancel_at("masked-image pretraining", 3), checkpoint)
    assert checkpoint.exists() and not (tmp_path / "stopped.safetensors").exists()
    logs: list[str] = []
    resumed = tmp_path / "resumed.safetensors"
    masked_pretrain(resumed, parent, [_scene()], RECIPE, "cpu", Progress(lambda *a: None, log=logs.append), checkpoint)
    assert any("resuming" in line for line in logs) and not checkpoint.exists()
    for key, value in read_weights(straight).items():
        assert torch.equal(value, read_weights(resumed)[key]), key


def test_the_pretrain_command_runs_the_masked_stage_first_and_says_so(tmp_path, model_factory, monkeypatch, capsys):
    """One command remakes a model with the stage: its card names the stage's data and error and the flag that
    ran it, descends from the model the stage started from, and no intermediate file is left behind."""
    import json

    import engine.models.pretrain as pretrain
    from engine.cli.main import main
    from engine.models.registry import read_card

    monkeypatch.setattr(pretrain, "CHECKPOINTS", tmp_path / "checkpoints")
    parent = model_factory(tmp_path / "parent.safetensors", **SMALL_MODEL)
    out = tmp_path / "real.safetensors"
    args = ["--jsonl", "pretrain", "--out", str(out), "--init", "none", "--masked-epochs", "1", "--train-tiles", "8", "--tile", "64",
            "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    assert main(args) == 2  # a random network has no encoder worth pretraining this way
    assert "trained model's encoder" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    args[args.index("none")] = str(parent)
    assert main(args) == 0
    card = read_card(out)
    stage = card.provenance["masked_image_pretraining"]
    assert len(stage["masked_error"]) == 1
    assert stage["data"]["unlabelled_scenes"][:5] == ["sample_0", "sample_1", "sample_2", "sample_123", "sample_70"]
    assert "--masked-epochs 1" in card.provenance["how"] and f"--init {parent}" in card.provenance["how"]
    assert card.lineage["initialised_from"]["file"] == parent.name
    assert not any((tmp_path / "checkpoints").iterdir())
    changed = {k for k, v in read_weights(parent).items() if not torch.equal(v.half(), read_weights(out)[k])}
    assert any(k.startswith("encoder.") for k in changed)
