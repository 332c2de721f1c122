"""A long training run stopped at any epoch goes on from its checkpoint as if it had never stopped."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import Cancelled
from engine.models.registry import ModelCard, build_model
from engine.models.training import TileSet, TrainConfig, train
from engine.progress import Progress

from conftest import cancel_at

SMALL = dict(name="resume test", architecture="unet", encoder="tu-resnet10t",
             arch_kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 4]}, tile_size=64)


def _data(seed: int) -> TileSet:
    rng = np.random.default_rng(seed)
    x = rng.uniform(1, 255, (8, 64, 64)).astype(np.float32)
    y = np.zeros((8, 64, 64), np.float32)
    y[:, 20:30, :] = 1.0
    x[y > 0] = 20.0
    return TileSet.from_arrays(list(x), list(y))


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(ModelCard(**SMALL))


def test_a_stopped_run_resumes_to_the_same_weights(tmp_path):
    config = dict(epochs=3, batch_size=4, lr=1e-3, patience=10, select_on_dice=True)
    straight = _model()
    report = train(straight, _data(0), _data(1), TrainConfig(**config))

    checkpoint = tmp_path / "run.pt"
    stopped = _model()
    with pytest.raises(Cancelled):  # the user (or the machine) stops it in epoch 3
        train(stopped, _data(0), _data(1), TrainConfig(**config, checkpoint=checkpoint), cancel_at("training", 5))
    assert checkpoint.exists()
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 2

    resumed = _model()
    logs: list[str] = []
    again = train(resumed, _data(0), _data(1), TrainConfig(**config, checkpoint=checkpoint), Progress(lambda *a: None, log=logs.append))
    assert any("resuming" in line for line in logs)
    assert not checkpoint.exists()  # done: nothing left to resume
    assert [h["epoch"] for h in again.history] == [1, 2, 3]
    assert again.best_epoch == report.best_epoch
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_pretrain_cli_trains_on_real_texture_and_says_what_on(tmp_path, capsys):
    """The command behind the bundled model, at a toy size: the card names every real tile it learnt from,
    and holds the threshold its validation bands chose."""
    import json

    from engine.cli.main import main
    from engine.models.registry import read_card

    out = tmp_path / "real.safetensors"
    args = ["--jsonl", "pretrain", "--out", str(out), "--init", "none", "--architecture", "unet", "--encoder", "tu-resnet10t",
            "--arch-kwargs", json.dumps(SMALL["arch_kwargs"]), "--train-tiles", "8", "--tile", "64", "--epochs", "1",
            "--batch-size", "4", "--device", "cpu"]
    assert main(args) == 2  # --init and another network are two starting points
    assert "not both" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    args.remove("--init"), args.remove("none")
    assert main(args) == 0
    card = read_card(out)
    data = card.provenance["data"]
    assert set(data["arctic_scenes"]) == {"sample_0", "sample_70"}
    assert data["north_sea_tiles"] == ["north_sea_1", "north_sea_2", "north_sea_3", "north_sea_4"]
    assert sum(data["tile_kinds"].values()) == 8
    assert card.threshold == card.metrics["validation_threshold"]
    assert "--data real --architecture unet --encoder tu-resnet10t" in card.provenance["how"]
