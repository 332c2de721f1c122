"""A long training run stopped at any epoch goes on from its checkpoint as if it had never stopped."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.errors import Cancelled
from engine.models.registry import ModelCard, build_model
from engine.models.training import TileSet, TrainConfig, reestimate_batch_norm, train, validate
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


@pytest.mark.parametrize("average_from", [None, 2])
def test_a_stopped_run_resumes_to_the_same_weights(tmp_path, average_from):
    config = dict(epochs=3, batch_size=4, lr=1e-3, patience=10, select_on_dice=True, average_from=average_from)
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


def test_synthetic_pretraining_stopped_in_an_epoch_goes_on_where_it_stopped(tmp_path, monkeypatch, capsys):
    """The longest run there is (13 min for the bundled network on a CPU, ten times that for DeepLabV3-R50): stopped in its
    second epoch, the same command resumes after the first and ends with the weights of a run that never stopped."""
    import json

    from engine.cli.main import main
    from engine.errors import Cancelled
    from engine.models import training
    from engine.models.registry import load_model

    monkeypatch.setattr("engine.models.pretrain.CHECKPOINTS", tmp_path / "checkpoints")
    args = ["--jsonl", "pretrain", "--data", "synthetic", "--architecture", "unet", "--encoder", "tu-resnet10t", "--arch-kwargs",
            json.dumps(SMALL["arch_kwargs"]), "--train-tiles", "4", "--val-tiles", "2", "--tile", "64", "--epochs", "2",
            "--batch-size", "2", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "straight.safetensors")]) == 0
    steps = 0
    loss = training.batch_loss

    def stopping(*a, **k):  # the machine goes away at the first step of epoch 2 (two steps an epoch)
        nonlocal steps
        steps += 1
        if steps == 3:
            raise Cancelled("stopped")
        return loss(*a, **k)

    stopped = [*args, "--out", str(tmp_path / "stopped.safetensors")]
    monkeypatch.setattr(training, "batch_loss", stopping)
    assert main(stopped) == Cancelled.exit_code
    assert not (tmp_path / "stopped.safetensors").exists()
    [checkpoint] = (tmp_path / "checkpoints").iterdir()
    assert torch.load(checkpoint, weights_only=True)["epoch"] == 1
    monkeypatch.setattr(training, "batch_loss", loss)
    capsys.readouterr()
    assert main(stopped) == 0
    assert "resuming" in capsys.readouterr().out and not checkpoint.exists()
    straight, resumed = (load_model(tmp_path / f"{n}.safetensors", torch.device("cpu"))[0].state_dict() for n in ("straight", "stopped"))
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)


def test_keep_last_runs_every_epoch_and_returns_the_last_with_its_own_threshold():
    """Patience 0 would stop before the first epoch; the weights are the last epoch's, and the threshold is placed on
    their own validation."""
    model = _model()
    epochs: list[dict[str, torch.Tensor]] = []
    progress = Progress(metrics=lambda scores: epochs.append({k: v.detach().clone() for k, v in model.state_dict().items()}))
    config = TrainConfig(epochs=3, batch_size=4, lr=1e-2, patience=0, select_on_dice=True, keep_last=True)
    report = train(model, _data(0), _data(1), config, progress)
    assert len(epochs) == report.epochs_run == 3 and report.best_epoch == 3
    assert all(torch.equal(value, epochs[2][name]) for name, value in model.state_dict().items())
    assert not all(torch.equal(epochs[1][name], epochs[2][name]) for name in epochs[2])
    assert (report.threshold, report.val_dice_calibrated) == pytest.approx(validate(model, _data(1), config).calibrated(config.threshold))


def test_stop_after_ends_where_the_longer_schedule_was_at_that_epoch():
    """The weights after epoch 2 of a 3-epoch schedule, to the bit: the refit of a validated run ends where its kept
    epoch ended, on the same learning-rate curve."""
    model = _model()
    epochs: list[dict[str, torch.Tensor]] = []
    progress = Progress(metrics=lambda scores: epochs.append({k: v.detach().clone() for k, v in model.state_dict().items()}))
    config = TrainConfig(epochs=3, batch_size=4, lr=1e-2)
    train(model, _data(0), None, config, progress)
    stopped = _model()
    report = train(stopped, _data(0), None, replace(config, stop_after=2))
    assert report.epochs_run == report.best_epoch == 2 and len(epochs) == 3
    assert all(torch.equal(value, epochs[1][name]) for name, value in stopped.state_dict().items())
    assert not all(torch.equal(epochs[1][name], epochs[2][name]) for name in epochs[2])


def test_weight_averaging_returns_the_mean_of_the_epochs_from_the_given_one():
    """Every epoch runs (patience 1 would stop it), the weights are the mean of epochs 2 and 3, and the batch-norm
    statistics are those of the averaged weights on the training tiles, not the mean of the epochs' ones."""
    model = _model()
    epochs: list[dict[str, torch.Tensor]] = []
    progress = Progress(metrics=lambda scores: epochs.append({k: v.detach().clone() for k, v in model.state_dict().items()}))
    config = TrainConfig(epochs=3, batch_size=4, lr=1e-2, patience=1, select_on_dice=True, average_from=2)
    report = train(model, _data(0), _data(1), config, progress)
    assert len(epochs) == len(report.history) == 3 and report.best_epoch == 3
    state = model.state_dict()
    for name, _ in model.named_parameters():
        assert torch.allclose(state[name], (epochs[1][name] + epochs[2][name]) / 2, atol=1e-6)
        assert not torch.allclose(epochs[1][name], epochs[2][name])
    norms = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    again = _model()
    again.load_state_dict({k: (epochs[1][k] + epochs[2][k]) / 2 if v.is_floating_point() else v for k, v in epochs[2].items()})
    reestimate_batch_norm(again, _data(0), config)
    for name in norms:
        mean = f"{name}.running_mean"
        assert torch.allclose(state[mean], again.state_dict()[mean], atol=1e-5)
        assert not torch.allclose(state[mean], (epochs[1][mean] + epochs[2][mean]) / 2, atol=1e-5)
    # The threshold and its Dice are the averaged weights' own on the validation tiles.
    assert (report.threshold, report.val_dice_calibrated) == pytest.approx(validate(model, _data(1), config).calibrated(config.threshold))


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
    assert set(data["arctic_scenes"]) == {"sample_0", "sample_1", "sample_2", "sample_123", "sample_70"}  # every labelled scene
    assert data["north_sea_tiles"] == ["north_sea_1", "north_sea_2", "north_sea_3", "north_sea_4"]
    assert sum(data["tile_kinds"].values()) == 8
    assert card.threshold == card.metrics["validation_threshold"]
    assert "--data real --architecture unet --encoder tu-resnet10t" in card.provenance["how"]
    assert "--init" not in card.provenance["how"]  # another network starts fresh, and --init with it is refused


def test_synthetic_pretraining_with_more_lookalikes_needs_its_own_file_and_says_so(tmp_path, capsys):
    """The bundled synthetic model was made without them; its card's command must still remake it."""
    import json

    from engine.cli.main import main
    from engine.models.registry import read_card

    out = tmp_path / "more.safetensors"
    args = ["--jsonl", "pretrain", "--data", "synthetic", "--more-lookalikes", "--train-tiles", "4", "--val-tiles", "2", "--tile", "64",
            "--epochs", "1", "--batch-size", "2", "--device", "cpu"]
    assert main(args) == 2
    assert "would replace a bundled model" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    small = ["--architecture", "unet", "--encoder", "tu-resnet10t", "--arch-kwargs", json.dumps(SMALL["arch_kwargs"])]
    assert main([*args, *small, "--out", str(out)]) == 0
    provenance = read_card(out).provenance
    assert provenance["how"].startswith("python -m engine pretrain --data synthetic --architecture unet")
    assert "--more-lookalikes" in provenance["how"] and "rain cells" in provenance["data"]


def test_real_pretraining_with_more_lookalikes_needs_its_own_file_and_says_so(tmp_path, capsys):
    """The real-texture recipe's synthetic tiles with the look-alikes: refused onto the bundled model's file, named in
    the card's command and data."""
    import json

    from engine.cli.main import main
    from engine.models.registry import read_card

    from conftest import make_model

    init = make_model(tmp_path / "init.safetensors", **{k: v for k, v in SMALL.items() if k != "name"})
    args = ["--jsonl", "pretrain", "--init", str(init), "--more-lookalikes", "--train-tiles", "8", "--tile", "64", "--epochs", "1",
            "--batch-size", "4", "--device", "cpu"]
    assert main(args) == 2
    assert "would replace a bundled model" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    assert main([*args, "--out", str(tmp_path / "more.safetensors")]) == 0
    provenance = read_card(tmp_path / "more.safetensors").provenance
    assert provenance["how"].startswith("python -m engine pretrain --data real") and provenance["how"].endswith("--more-lookalikes")
    assert provenance["data"]["mix"]["synthetic_lookalikes"] is True


def test_pretrain_init_share_saves_the_trained_weights_moved_back_toward_the_init(tmp_path, capsys):
    """The same seeded run saved as trained and with --init-share 0.5: every float tensor halfway (to fp16),
    the threshold placed again on the validation bands, no trained file left behind; a model that was not
    trained from the given init is refused."""
    from engine.cli.main import main
    from engine.errors import ModelError
    from engine.models.pretrain import CHECKPOINTS, RealRecipe, toward_init
    from engine.models.registry import load_model, read_card

    from conftest import make_model

    init = make_model(tmp_path / "init.safetensors", **{k: v for k, v in SMALL.items() if k != "name"})
    args = ["--jsonl", "pretrain", "--init", str(init), "--train-tiles", "8", "--tile", "64", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "trained.safetensors")]) == 0
    assert main([*args, "--out", str(tmp_path / "moved.safetensors"), "--init-share", "0.5"]) == 0
    capsys.readouterr()
    cpu = torch.device("cpu")
    (start, _), (trained, _), (moved, card) = (load_model(tmp_path / f"{n}.safetensors", cpu) for n in ("init", "trained", "moved"))
    start, trained = start.state_dict(), trained.state_dict()
    for name, value in moved.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, (0.5 * trained[name] + 0.5 * start[name]).half().float(), rtol=2e-3, atol=2e-3)
    assert card.provenance["how"].endswith("--init-share 0.5") and card.provenance["init_share"]["share"] == 0.5
    assert card.provenance["init_share"]["trained_validation_dice"] == read_card(tmp_path / "trained.safetensors").metrics["validation_dice"]
    assert card.threshold == card.metrics["validation_threshold"] and not (CHECKPOINTS / "moved-trained.safetensors").exists()
    with pytest.raises(ModelError, match="was not trained from init.safetensors"):
        toward_init(init, tmp_path / "refused.safetensors", RealRecipe(init=init, init_share=0.5), "cpu", Progress())
    assert not (tmp_path / "refused.safetensors").exists()
    assert read_card(tmp_path / "trained.safetensors").lineage["initialised_from"]["file"] == "init.safetensors"



def test_pretrain_pos_weight_cap_trains_with_that_cap_and_says_so(tmp_path, capsys):
    """The same seeded run with the BCE's slick weight capped at 1: other weights, the cap in the card's command,
    none in the default run's; a cap below 1 is refused before any training."""
    import json

    from engine.cli.main import main
    from engine.models.registry import load_model, read_card

    from conftest import make_model

    init = make_model(tmp_path / "init.safetensors", **{k: v for k, v in SMALL.items() if k != "name"})
    args = ["--jsonl", "pretrain", "--init", str(init), "--train-tiles", "8", "--tile", "64", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "default.safetensors")]) == 0
    assert main([*args, "--out", str(tmp_path / "plain.safetensors"), "--pos-weight-cap", "1"]) == 0
    assert main([*args, "--out", str(tmp_path / "refused.safetensors"), "--pos-weight-cap", "0.5"]) == 2
    assert "below a sea pixel" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    assert not (tmp_path / "refused.safetensors").exists()
    assert read_card(tmp_path / "plain.safetensors").provenance["how"].endswith("--pos-weight-cap 1")
    assert "--pos-weight-cap" not in read_card(tmp_path / "default.safetensors").provenance["how"]
    assert (read_card(tmp_path / "plain.safetensors").pos_weight_cap, read_card(tmp_path / "default.safetensors").pos_weight_cap) == (1, 100)
    cpu = torch.device("cpu")
    default, plain = (load_model(tmp_path / f"{n}.safetensors", cpu)[0].state_dict() for n in ("default", "plain"))
    assert any(not torch.equal(default[name], plain[name]) for name in default if default[name].is_floating_point())


def test_pretrain_north_sea_names_the_tiles_it_learns_from_so_the_others_can_score_it(tmp_path, capsys):
    """Left out, the North Sea tiles (IW/VV) can score a model on another sea; the card's data and command say which
    it learnt from, and an unknown tile is refused before any training."""
    import json

    from engine.cli.main import main
    from engine.models.registry import load_model, read_card

    from conftest import make_model

    init = make_model(tmp_path / "init.safetensors", **{k: v for k, v in SMALL.items() if k != "name"})
    args = ["--jsonl", "pretrain", "--init", str(init), "--train-tiles", "8", "--tile", "64", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "all.safetensors")]) == 0
    assert main([*args, "--out", str(tmp_path / "none.safetensors"), "--north-sea"]) == 0
    assert main([*args, "--out", str(tmp_path / "one.safetensors"), "--north-sea", "north_sea_2"]) == 0
    assert main([*args, "--out", str(tmp_path / "refused.safetensors"), "--north-sea", "north_sea_9"]) == 2
    assert "Unknown North Sea tile: north_sea_9" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    assert not (tmp_path / "refused.safetensors").exists()
    assert main([*args, "--out", str(tmp_path / "as_is.safetensors"), "--north-sea-as-is"]) == 0
    cards = {n: read_card(tmp_path / f"{n}.safetensors").provenance for n in ("all", "none", "one", "as_is")}
    assert [cards[n]["data"]["north_sea_tiles"] for n in cards] == [[f"north_sea_{i}" for i in range(1, 5)], [], ["north_sea_2"],
                                                                   [f"north_sea_{i}" for i in range(1, 5)]]
    assert "--north-sea" not in cards["all"]["how"] and "north_sea_levels" not in cards["all"]["data"]
    assert cards["none"]["how"].endswith("--north-sea") and cards["one"]["how"].endswith("--north-sea north_sea_2")
    assert cards["as_is"]["how"].endswith("--north-sea-as-is") and cards["as_is"]["data"]["north_sea_levels"] == "their 8-bit levels as they are"
    cpu = torch.device("cpu")
    every, none, as_is = (load_model(tmp_path / f"{n}.safetensors", cpu)[0].state_dict() for n in ("all", "none", "as_is"))
    assert any(not torch.equal(every[name], none[name]) for name in every if every[name].is_floating_point())
    assert any(not torch.equal(every[name], as_is[name]) for name in every if every[name].is_floating_point())
    # It would replace the bundled model, which learnt the tiles re-stretched.
    assert main([*args[:-2], "--device", "cpu", "--north-sea-as-is"]) == 2
    assert "--north-sea-as-is would replace the bundled model" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]


def test_pretrain_train_layers_keep_last_and_frozen_statistics_do_and_say_so(tmp_path, capsys):
    """The encoder's weights and batch-norm statistics stay the start's to the bit (of float16, as a trained model is
    saved), the decoder's move, and the card's command names the option; the default run moves the encoder and does
    not name it. ``--keep-last`` is named in the command and the selection; ``--frozen-statistics`` keeps every batch
    norm's running statistics while the weights move; ``--dice-weight`` is named and moves the weights otherwise; so is ``--skeleton-weight``, and a negative one is refused;
    ``--strand-width``, ``--faintest-ratio`` and ``--fronts`` are named, and one outside their range refused."""
    from engine.cli.main import main
    from engine.models.registry import load_model, read_card

    from conftest import make_model

    init = make_model(tmp_path / "init.safetensors", **{k: v for k, v in SMALL.items() if k != "name"})
    args = ["--jsonl", "pretrain", "--init", str(init), "--train-tiles", "8", "--tile", "64", "--epochs", "1", "--batch-size", "4",
            "--device", "cpu", "--pos-weight-cap", "1"]
    assert main([*args, "--out", str(tmp_path / "decoder.safetensors"), "--train-layers", "decoder"]) == 0
    assert main([*args, "--out", str(tmp_path / "all.safetensors")]) == 0
    assert main([*args, "--out", str(tmp_path / "last.safetensors"), "--keep-last"]) == 0
    assert main([*args, "--out", str(tmp_path / "stats.safetensors"), "--frozen-statistics"]) == 0
    assert main([*args, "--out", str(tmp_path / "dice.safetensors"), "--dice-weight", "0.25"]) == 0
    assert main([*args, "--out", str(tmp_path / "skeleton.safetensors"), "--skeleton-weight", "0.5"]) == 0
    assert main([*args, "--out", str(tmp_path / "negative.safetensors"), "--skeleton-weight", "-1"]) == 2
    assert not (tmp_path / "negative.safetensors").exists()
    assert main([*args, "--out", str(tmp_path / "thin.safetensors"), "--strand-width", "0.6"]) == 0
    assert main([*args, "--out", str(tmp_path / "flat.safetensors"), "--strand-width", "0"]) == 2
    assert not (tmp_path / "flat.safetensors").exists()
    assert main([*args, "--out", str(tmp_path / "faint.safetensors"), "--faintest-ratio", "0.7"]) == 0
    assert main([*args, "--out", str(tmp_path / "bright.safetensors"), "--faintest-ratio", "1.2"]) == 2
    assert not (tmp_path / "bright.safetensors").exists()
    assert main([*args, "--out", str(tmp_path / "fronts.safetensors"), "--fronts", "0.1"]) == 0
    assert main([*args, "--out", str(tmp_path / "all_fronts.safetensors"), "--fronts", "2"]) == 2
    assert not (tmp_path / "all_fronts.safetensors").exists()
    assert read_card(tmp_path / "decoder.safetensors").provenance["how"].endswith("--train-layers decoder")
    assert "--train-layers" not in read_card(tmp_path / "all.safetensors").provenance["how"]
    last = read_card(tmp_path / "last.safetensors").provenance
    assert last["how"].endswith("--keep-last") and last["selection"].startswith("the last epoch (1); threshold")
    assert read_card(tmp_path / "all.safetensors").provenance["selection"].startswith("epoch and threshold")
    assert read_card(tmp_path / "stats.safetensors").provenance["how"].endswith("--frozen-statistics")
    assert read_card(tmp_path / "dice.safetensors").provenance["how"].endswith("--dice-weight 0.25")
    assert "--dice-weight" not in read_card(tmp_path / "all.safetensors").provenance["how"]
    assert read_card(tmp_path / "skeleton.safetensors").provenance["how"].endswith("--skeleton-weight 0.5")
    assert "--skeleton-weight" not in read_card(tmp_path / "all.safetensors").provenance["how"]
    assert read_card(tmp_path / "thin.safetensors").provenance["how"].endswith("--strand-width 0.6")
    assert "--strand-width" not in read_card(tmp_path / "all.safetensors").provenance["how"]
    assert read_card(tmp_path / "faint.safetensors").provenance["how"].endswith("--faintest-ratio 0.7")
    assert "--faintest-ratio" not in read_card(tmp_path / "all.safetensors").provenance["how"]
    assert read_card(tmp_path / "fronts.safetensors").provenance["how"].endswith("--fronts 0.1")
    assert "--fronts" not in read_card(tmp_path / "all.safetensors").provenance["how"]
    dice, every_weight = (load_model(tmp_path / f"{n}.safetensors", torch.device("cpu"))[0].state_dict() for n in ("dice", "all"))
    assert any(not torch.equal(dice[name], every_weight[name]) for name in dice if dice[name].is_floating_point())
    stats = load_model(tmp_path / "stats.safetensors", torch.device("cpu"))[0].state_dict()
    init_state = load_model(init, torch.device("cpu"))[0].state_dict()
    running = [name for name in stats if name.endswith(("running_mean", "running_var"))]
    assert running and all(torch.equal(init_state[name].half().float(), stats[name]) for name in running)
    assert any(not torch.equal(init_state[name].half().float(), stats[name]) for name in stats if name.endswith(".weight"))
    cpu = torch.device("cpu")
    start, decoder, every = (load_model(tmp_path / f"{n}.safetensors", cpu)[0].state_dict() for n in ("init", "decoder", "all"))
    encoder = [name for name in start if name.startswith("encoder.") and start[name].is_floating_point()]
    start = {name: value.half().float() if value.is_floating_point() else value for name, value in start.items()}  # as saved
    assert encoder and all(torch.equal(start[name], decoder[name]) for name in encoder)
    assert any("running_mean" in name for name in encoder)
    assert any(not torch.equal(start[name], every[name]) for name in encoder)
    assert any(not torch.equal(start[name], decoder[name]) for name in decoder if name.startswith("decoder.") and start[name].is_floating_point())


def test_refit_trains_again_on_every_labelled_pixel_for_the_kept_epochs_and_keeps_the_threshold(tmp_path):
    """The same run with and without ``--refit``: the refit's card names it, keeps the validated threshold, ran the
    validated run's kept epochs, and no longer claims the bands' Dice (they are training pixels now); its weights
    are other weights."""
    from engine.cli.main import main
    from engine.models.registry import load_model, read_card

    from conftest import make_model

    init = make_model(tmp_path / "init.safetensors", **{k: v for k, v in SMALL.items() if k != "name"})
    args = ["--jsonl", "pretrain", "--init", str(init), "--train-tiles", "8", "--tile", "64", "--epochs", "2", "--batch-size", "4",
            "--device", "cpu", "--pos-weight-cap", "1", "--init-share", "0.5"]
    assert main([*args, "--out", str(tmp_path / "validated.safetensors")]) == 0
    assert main([*args, "--out", str(tmp_path / "refit.safetensors"), "--refit"]) == 0
    validated, refitted = read_card(tmp_path / "validated.safetensors"), read_card(tmp_path / "refit.safetensors")
    assert refitted.provenance["how"] == validated.provenance["how"] + " --refit"
    assert refitted.threshold == validated.threshold and refitted.provenance["refit"]["epochs"] == validated.provenance["best_epoch"]
    assert "validation_dice" not in refitted.metrics and refitted.metrics["validated_model_dice"] == validated.metrics["validation_dice"]
    assert refitted.measured is None or "validation bands" not in refitted.measured
    a, b = (load_model(tmp_path / f"{n}.safetensors", torch.device("cpu"))[0].state_dict() for n in ("validated", "refit"))
    assert any(not torch.equal(a[name], b[name]) for name in a if a[name].is_floating_point())


def test_band_mean_validation_gives_each_scene_s_band_one_vote(tmp_path):
    """Each band's Dice curve on its own, averaged: the band with more slick pixels weighs no more than the other,
    and with one scene it is that band's own validation."""
    from engine.models.pretrain import RealRecipe, _band_tiles, _tileset, band_mean_validation, validation_split
    from engine.models.registry import load_model

    from conftest import make_model

    model, card = load_model(make_model(tmp_path / "m.safetensors", **{k: v for k, v in SMALL.items() if k != "name"}))
    config = TrainConfig(device="cpu")
    own = [validate(model, _tileset(_band_tiles([validation_split(name, card.pixel_size)[1]], RealRecipe.tile)), config)
           for name in ("sample_0", "sample_70")]
    both = band_mean_validation(model, RealRecipe(scenes=("sample_0", "sample_70")), card.pixel_size, config)
    np.testing.assert_allclose(both.dice_at, (own[0].dice_at + own[1].dice_at) / 2)
    assert both.slick_pixels == own[0].slick_pixels + own[1].slick_pixels and own[0].slick_pixels != own[1].slick_pixels
    one = band_mean_validation(model, RealRecipe(scenes=("sample_70",)), card.pixel_size, config)
    np.testing.assert_allclose(one.dice_at, own[1].dice_at)

def test_average_models_is_the_mean_of_seeds_trained_from_one_start(tmp_path, capsys):
    """Two seeded runs from one start averaged tensor by tensor (to fp16), each member named by its hash; a
    model that did not start there is refused and nothing is written."""
    from engine.cli.main import main
    from engine.errors import ModelError
    from engine.machine import file_sha256
    from engine.models.pretrain import average_models
    from engine.models.registry import load_model, read_card

    from conftest import make_model

    init = make_model(tmp_path / "init.safetensors", **{k: v for k, v in SMALL.items() if k != "name"})
    args = ["--jsonl", "pretrain", "--init", str(init), "--train-tiles", "8", "--tile", "64", "--epochs", "1", "--batch-size", "4", "--device", "cpu"]
    members = [tmp_path / f"seed{seed}.safetensors" for seed in (0, 1)]
    for seed, member in enumerate(members):
        assert main([*args, "--seed", str(seed), "--out", str(member)]) == 0
    capsys.readouterr()
    soup = average_models(members, tmp_path / "soup.safetensors")
    cpu = torch.device("cpu")
    a, b = (load_model(m, cpu)[0].state_dict() for m in members)
    assert any(not torch.equal(a[k], b[k]) for k in a if a[k].is_floating_point())
    for name, value in load_model(soup, cpu)[0].state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, ((a[name] + b[name]) / 2).half().float(), rtol=2e-3, atol=2e-3)
    assert [m["sha256"] for m in read_card(soup).provenance["soup"]] == [file_sha256(m) for m in members]
    with pytest.raises(ModelError, match="do not share the model they were trained from"):
        average_models([members[0], init], tmp_path / "refused.safetensors")
    assert not (tmp_path / "refused.safetensors").exists()


def test_ensemble_models_is_the_mean_logit_of_seeds_with_its_own_threshold(tmp_path, capsys, monkeypatch):
    """Two seeded runs of one recipe as one network whose logit is their mean, its threshold placed on the same
    validation bands; a synthetic-only network of another architecture joins a real one alike, by the mean or the
    minimum of their logits; members that learnt
    from other scenes, or read tiles at another pixel size, are refused and nothing is written."""
    from engine.cli.main import main
    from engine.errors import ModelError
    from engine.machine import file_sha256
    from engine.models.pretrain import RealRecipe, _tileset, ensemble_models, validation_tiles
    from engine.models.training import TrainConfig, validate
    from engine.models.registry import load_model, read_card
    from engine.progress import Progress

    from conftest import make_model

    init = make_model(tmp_path / "init.safetensors", **{k: v for k, v in SMALL.items() if k != "name"})
    args = ["--jsonl", "pretrain", "--init", str(init), "--train-tiles", "8", "--tile", "64", "--epochs", "1", "--batch-size", "4",
            "--device", "cpu", "--scenes", "sample_0", "sample_70"]
    members = [tmp_path / f"seed{seed}.safetensors" for seed in (0, 1)]
    for seed, member in enumerate(members):
        assert main([*args, "--seed", str(seed), "--out", str(member)]) == 0
    capsys.readouterr()
    made = ensemble_models(members, tmp_path / "ens.safetensors", "cpu", Progress(None))
    cpu = torch.device("cpu")
    ensemble, card = load_model(made["model"], cpu)
    x = torch.rand(2, 1, 64, 64)
    with torch.inference_mode():
        logits = [load_model(m, cpu)[0].eval()(x) for m in members]
        assert not torch.allclose(logits[0], logits[1], atol=1e-2)
        torch.testing.assert_close(ensemble.eval()(x), (logits[0] + logits[1]) / 2, rtol=2e-2, atol=2e-2)
    assert card.architecture == "ensemble" and card.threshold == made["threshold"]
    bands = _tileset(validation_tiles(RealRecipe(scenes=("sample_0", "sample_70")), card.pixel_size))
    on_bands = validate(ensemble, bands, TrainConfig(device="cpu")).dice_near(card.threshold)  # its weights stored in fp16
    assert abs(on_bands - card.metrics["validation_dice"]) < 1e-3  # placed on the bands of the scenes the members learnt from
    assert [m["sha256"] for m in card.provenance["members"]] == [file_sha256(m) for m in members]
    other = tmp_path / "other.safetensors"
    assert main([*args[:-3], "--scenes", "sample_1", "sample_2", "--seed", "2", "--out", str(other)]) == 0
    synthetic = make_model(tmp_path / "synthetic.safetensors", architecture="deeplabv3", encoder="resnet18", arch_kwargs={},
                           tile_size=64, provenance={"data": "synthetic scenes"})
    # The command an analyst runs to make such a model (``python -m engine ensemble``).
    assert main(["--jsonl", "ensemble", str(members[0]), str(synthetic), "--out", str(tmp_path / "mixed.safetensors"), "--device", "cpu",
                 "--name", "U-Net + DeepLabV3", "--min-area-km2", "0.1"]) == 0
    both, mixed_card = load_model(tmp_path / "mixed.safetensors", cpu)
    with torch.inference_mode():
        torch.testing.assert_close(both.eval()(x), (logits[0] + load_model(synthetic, cpu)[0].eval()(x)) / 2, rtol=2e-2, atol=2e-2)
    assert [m["architecture"] for m in mixed_card.arch_kwargs["members"]] == ["unet", "deeplabv3"]
    assert mixed_card.provenance["members"][1]["data"] == "synthetic scenes" and mixed_card.name == "U-Net + DeepLabV3"
    assert mixed_card.min_area_km2 == 0.1  # the smallest slick measured for the pairing travels with it
    assert mixed_card.provenance["data"] == read_card(members[0]).provenance["data"] and mixed_card.created > read_card(members[0]).created
    assert abs(validate(both, bands, TrainConfig(device="cpu")).dice_near(mixed_card.threshold) - mixed_card.metrics["validation_dice"]) < 1e-3
    monkeypatch.setenv("SLICK_MAPPER_MODELS", str(tmp_path / "models"))  # without --out: the analyst's models folder, which the dock lists
    assert main(["--jsonl", "ensemble", str(members[0]), str(synthetic), "--fusion", "min", "--device", "cpu"]) == 0
    smallest, least_card = load_model(tmp_path / "models" / "seed0_with_synthetic.safetensors", cpu)  # the fusion is on its card
    with torch.inference_mode():
        torch.testing.assert_close(smallest.eval()(x), torch.minimum(logits[0], load_model(synthetic, cpu)[0].eval()(x)), rtol=2e-2, atol=2e-2)
    assert least_card.arch_kwargs["fusion"] == "min" and least_card.name.startswith("min of")
    assert least_card.min_area_km2 == read_card(members[0]).min_area_km2  # none given: the first member's
    capsys.readouterr()
    assert main(["models"]) == 0  # the list the dock shows names what runs a tile, not the first member's encoder alone
    assert "min of unet / tu-resnet10t and deeplabv3 / resnet18" in capsys.readouterr().out
    assert abs(validate(smallest, bands, TrainConfig(device="cpu")).dice_near(least_card.threshold) - least_card.metrics["validation_dice"]) < 1e-3
    finer = make_model(tmp_path / "finer.safetensors", **{k: v for k, v in SMALL.items() if k != "name"}, pixel_size=10.0)
    for refused in ([members[0], other], [members[0], finer]):
        with pytest.raises(ModelError, match="not models that learnt the same Arctic scenes and read tiles alike"):
            ensemble_models(refused, tmp_path / "refused.safetensors", "cpu", Progress(None))
        assert not (tmp_path / "refused.safetensors").exists()
    capsys.readouterr()
    for refused, why in (([str(tmp_path / "absent.safetensors"), str(synthetic)], "No model file at"),
                         ([str(members[0]), str(synthetic), "--out", str(synthetic)], "is one of the members"),
                         ([str(members[0]), str(synthetic), "--min-area-km2", "-0.1"], "is negative")):
        assert main(["ensemble", *refused, *([] if "--out" in refused else ["--out", str(tmp_path / "refused.safetensors")])]) != 0
        assert why in capsys.readouterr().err
    assert not (tmp_path / "refused.safetensors").exists() and load_model(synthetic, cpu)[1].architecture == "deeplabv3"


def test_a_model_that_learnt_no_real_scene_is_cut_where_whole_real_scenes_say(tmp_path):
    """``calibrated_on_scenes``: a synthetic-only model's threshold is placed by slick Dice on every tile of the named
    labelled scenes; a model that learnt one of them is refused, and nothing is written."""
    from engine.data import bundled, real_scenes
    from engine.errors import ModelError
    from engine.models.pretrain import RealRecipe, _band_tiles, _tileset, calibrated_on_scenes
    from engine.models.registry import load_model

    from conftest import make_model

    fields = {k: v for k, v in SMALL.items() if k != "name"}
    synthetic = make_model(tmp_path / "synthetic.safetensors", **fields, provenance={"data": "synthetic scenes"})
    scenes = ("sample_0", "sample_70")
    made = calibrated_on_scenes(synthetic, scenes, tmp_path / "cut.safetensors", "cpu", Progress(None))
    model, card = load_model(made["model"], torch.device("cpu"))
    by_name = {scene.name: scene for scene in bundled.ARCTIC}
    tiles = _tileset(_band_tiles([real_scenes.load_labelled(by_name[name], card.pixel_size) for name in scenes], RealRecipe.tile))
    assert tiles.x.shape[0] == 9 + 17  # every tile of both scenes, not their validation bands alone
    on_scenes = validate(model, tiles, TrainConfig(device="cpu")).dice_near(card.threshold)  # its weights stored in fp16
    assert card.threshold == made["threshold"] and abs(on_scenes - card.metrics["scenes_dice"]) < 1e-3
    assert card.provenance["threshold_scenes"]["scenes"] == list(scenes)
    learnt = make_model(tmp_path / "learnt.safetensors", **fields,
                        provenance={"data": {"arctic_scenes": {"sample_70": "all but its validation band"}}})
    with pytest.raises(ModelError, match="learnt sample_70"):
        calibrated_on_scenes(learnt, scenes, tmp_path / "refused.safetensors", "cpu", Progress(None))
    assert not (tmp_path / "refused.safetensors").exists()


def test_pretrain_with_a_teacher_learns_its_probabilities_too_and_says_which(tmp_path, capsys):
    """The same seeded run with and without ``--teacher`` (an ensemble file, as the benchmark's teacher is): other
    weights, the teacher named by file and hash in the card's command and data; a missing teacher, one that reads
    other tiles, or a teacher with ``--refit`` is refused before any training."""
    import json

    from engine.cli.main import main
    from engine.machine import file_sha256
    from engine.models.registry import load_model, read_card

    from conftest import make_ensemble, make_model

    small = {k: v for k, v in SMALL.items() if k != "name"}
    init = make_model(tmp_path / "init.safetensors", **small)
    teacher = make_ensemble(init, tmp_path / "teacher.safetensors")
    args = ["--jsonl", "pretrain", "--init", str(init), "--train-tiles", "8", "--tile", "64", "--epochs", "1", "--batch-size", "4",
            "--device", "cpu", "--pos-weight-cap", "1"]
    assert main([*args, "--out", str(tmp_path / "plain.safetensors")]) == 0
    assert main([*args, "--out", str(tmp_path / "taught.safetensors"), "--teacher", str(teacher)]) == 0
    card = read_card(tmp_path / "taught.safetensors")
    assert card.provenance["how"] == read_card(tmp_path / "plain.safetensors").provenance["how"] + f" --teacher {teacher}"
    assert card.provenance["data"]["teacher"]["sha256"] == file_sha256(teacher)
    a, b = (load_model(tmp_path / f"{n}.safetensors", torch.device("cpu"))[0].state_dict() for n in ("plain", "taught"))
    assert any(not torch.equal(a[name], b[name]) for name in a if a[name].is_floating_point())
    capsys.readouterr()
    other = make_model(tmp_path / "other.safetensors", **{**small, "pixel_size": 10.0})
    for extra, said in ((["--teacher", str(tmp_path / "none.safetensors")], "No teacher model"),
                        (["--teacher", str(other)], "reads tiles otherwise"),
                        (["--teacher", str(teacher), "--refit", "--init-share", "0.5"], "without a teacher")):
        out = tmp_path / "refused.safetensors"
        assert main([*args, "--out", str(out), *extra]) == 2
        assert said in json.loads(capsys.readouterr().out.splitlines()[-1])["message"] and not out.exists()
