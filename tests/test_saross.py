"""SAROSS-Net with small configurations: shapes on the product's tile sizes, the CAFT block's attention over
channels and its wiring, model files, training as a student, detection on the real Arctic tile, fine-tuning,
pretraining from the command line, ONNX, and the MambaVision encoder's refusal where it cannot run."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from engine.cli.main import main
from engine.data import bundled, real_scenes
from engine.errors import ModelError
from engine.jobs.detect import DetectOptions, detect
from engine.jobs.finetune import FinetuneOptions, finetune
from engine.jobs.labels import create_store, import_mask
from engine.models import agreement, runtimes
from engine.models.inference import Predictor
from engine.models.losses import StudentLoss
from engine.models.pretrain import pretrain_card
from engine.models.registry import ARCHITECTURES, ModelCard, build_model, load_model, read_card, save_model
from engine.models.saross import CAFT, FALLBACK_ENCODER, MambaVisionFeatures, SarossNet, transposed_attention
from engine.models.training import TileSet, TrainConfig, tile_loss

from conftest import SAMPLES, SMALL_MODEL, check_detection_rasters
from test_distill import _hand_made_folder

SMALL = dict(SMALL_MODEL, architecture="saross")
"""Three encoder levels, one CAFT block: card fields of a SAROSS-Net that trains in seconds."""
DEEP = dict(encoder_depth=5, decoder_channels=[32, 32, 16, 16, 8])
"""Five levels (down to 1/32), six CAFT blocks: the paper's nesting, narrow."""
CPU = torch.device("cpu")


def _card(tile: int = 64, **fields) -> ModelCard:
    return ModelCard(**{"name": "tiny saross", **SMALL, "tile_size": tile, **fields})


def _model(**fields) -> nn.Module:
    torch.manual_seed(0)
    return build_model(_card(**fields))


def _deep(caft: bool = True, **kwargs) -> SarossNet:
    torch.manual_seed(0)
    return SarossNet("resnet10t", caft=caft, **{**DEEP, **kwargs})


@pytest.fixture(scope="module", params=[True, False], ids=["caft", "plain"])
def deep(request) -> SarossNet:
    return _deep(request.param).eval()


@pytest.mark.parametrize("size", [(64, 64), (96, 96), (224, 224), (256, 256), (96, 160), (97, 130)])
def test_forward_gives_full_resolution_logits_on_even_and_odd_grids(deep, size):
    """96 and 224 are tiles of an odd number of 32-pixel blocks: their deepest features are 3x3 and 7x7."""
    with torch.inference_mode():
        assert deep(torch.rand(2, 1, *size)).shape == (2, 1, *size)


def test_classes_set_the_logit_channels():
    model = build_model(_card(classes=["sea", "oil", "look-alike", "ship", "land"])).eval()
    with torch.inference_mode():
        assert model(torch.rand(1, 1, 64, 64)).shape == (1, 5, 64, 64)


def test_every_nested_skip_node_is_a_caft_block_and_the_ablation_has_none():
    levels = DEEP["encoder_depth"]
    caft, plain = _deep(True), _deep(False)
    nested = {f"x{i}_{j}" for j in range(1, levels) for i in range(levels - j) if i + j < levels - 1}
    decoder = {f"x{i}_{levels - 1 - i}" for i in range(levels - 1)}
    assert {name for name, node in caft.nodes.items() if isinstance(node, CAFT)} == nested and len(nested) == 6
    assert set(caft.nodes) == set(plain.nodes) == nested | decoder
    assert not any(isinstance(m, CAFT) for m in plain.modules())
    # Plain UNet++ nodes see their whole row; the CAFT model's decoder blocks only the last CAFT output.
    assert plain.nodes["x0_4"][0].in_channels == 64 + 3 * 16 + 16
    assert caft.nodes["x0_4"][0].in_channels == 16 + 16


def test_transposed_attention_mixes_channels_within_each_pixel():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, 4, 30, generator=gen) for _ in range(3))
    temperature = torch.full((2, 1, 1), 2.0)
    out = transposed_attention(q, k, v, temperature)
    assert out.shape == v.shape
    # Values at one pixel reach the output at that pixel only: the attention map is over channels.
    moved = v.clone()
    moved[..., 7] += 1
    changed = (transposed_attention(q, k, moved, temperature) - out).abs().amax(dim=(0, 1, 2)) > 1e-6
    assert changed.nonzero().flatten().tolist() == [7]
    # A key at one pixel changes the whole map, so every pixel's output.
    keyed = k.clone()
    keyed[..., 7] += 1
    assert ((transposed_attention(q, keyed, v, temperature) - out).abs().amax(dim=(0, 1, 2)) > 1e-6).all()
    # Pixels in another order (the same for all three) give the same outputs in that order.
    order = torch.randperm(30, generator=gen)
    torch.testing.assert_close(transposed_attention(q[..., order], k[..., order], v[..., order], temperature), out[..., order])


def test_caft_queries_with_the_lower_resolution_node_and_keeps_it_as_residual():
    torch.manual_seed(0)
    block = CAFT(lr_channels=12, hr_channels=6, channels=8, heads=2, expansion=2.0)
    lr, hr = torch.randn(2, 12, 16, 16, requires_grad=True), torch.randn(2, 6, 16, 16, requires_grad=True)
    out = block(lr, hr)
    assert out.shape == (2, 8, 16, 16)
    out.square().mean().backward()
    for name, parameter in block.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
    assert lr.grad.abs().sum() > 0 and hr.grad.abs().sum() > 0
    with pytest.raises(RuntimeError):
        block(hr, lr)  # the Query projection takes the lower-resolution node's channels
    with torch.no_grad():
        block.project_out.weight.zero_()
        block.ffn.project_out.weight.zero_()
        torch.testing.assert_close(block(lr, hr), block.query_in(lr))  # without the transfer, what goes on is the Query
        torch.testing.assert_close(block(lr, torch.randn_like(hr)), block.query_in(lr))


def test_model_file_round_trip_gives_identical_outputs(tmp_path):
    model = _model(arch_kwargs={**SMALL["arch_kwargs"], "heads": 2}).eval()
    card = _card(arch_kwargs={**SMALL["arch_kwargs"], "heads": 2})
    x = torch.rand(2, 1, 96, 96)
    with torch.inference_mode():
        before = model(x)
    again, card2 = load_model(save_model(model, card, tmp_path / "saross.safetensors"))
    assert isinstance(again, SarossNet) and card2 == card
    with torch.inference_mode():
        assert torch.equal(again(x), before)
    half, _ = load_model(save_model(model, card, tmp_path / "half.safetensors", half=True))
    with torch.inference_mode():
        torch.testing.assert_close(half(x), before, atol=0.05, rtol=0.05)


def _arctic_tiles(n: int, tile: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """The ``n`` tiles of the real sample_1 scene with the most labelled slick pixels."""
    scene = real_scenes.load_labelled(next(s for s in bundled.ARCTIC if s.name == "sample_1"), 25.0)
    starts = [(r, c) for r in range(0, scene.values.shape[0] - tile + 1, tile) for c in range(0, scene.values.shape[1] - tile + 1, tile)]
    starts.sort(key=lambda rc: -scene.slick[rc[0] : rc[0] + tile, rc[1] : rc[1] + tile].sum())
    cut = lambda a: np.stack([a[r : r + tile, c : c + tile] for r, c in starts[:n]]).astype(np.float32)  # noqa: E731
    return cut(scene.values), cut(scene.slick)


def test_a_tiny_saross_net_learns_as_a_student_by_eq_10():
    """Real Arctic tiles with their labels, and the same tiles as 'generated' ones with soft labels: the
    student loss (CE 1, Dice 0.5, KD 0.1 at T = 2) falls over a few steps."""
    x, y = _arctic_tiles(2)
    real = TileSet.from_arrays(list(x), list(y))
    soft = torch.nn.functional.avg_pool2d(real.y, 5, stride=1, padding=2)  # a teacher that is unsure at the edges
    data = TileSet(torch.cat([real.x, real.x]), torch.cat([real.y, real.y]), torch.cat([real.valid, real.valid]),
                   torch.cat([real.y, soft]), torch.tensor([False, False, True, True]))
    loss = StudentLoss(temperature=2.0)
    assert (loss.ce, loss.dice, loss.kd) == (1.0, 0.5, 0.1)
    config = TrainConfig(student=loss)
    model = _model()
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    model.train()
    for _ in range(12):
        value = tile_loss(model(data.x * config.input_scale), data, config)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        losses.append(value.item())
    assert all(np.isfinite(losses)) and losses[-1] < 0.8 * losses[0]


@pytest.fixture(scope="module")
def arctic_store(tmp_path_factory):
    path = create_store(tmp_path_factory.mktemp("store") / "labels.gpkg", "EPSG:4326")
    import_mask(path, SAMPLES / "sample_1" / "raw_mosaic.tif", SAMPLES / "sample_1" / "labels_mosaic.png")
    return path


def test_student_fine_tune_of_a_saross_net(tmp_path, arctic_store):
    """A SAROSS-Net base trains as a student on generated samples (``finetune --generated``); ``decoder``
    leaves its encoder as it was."""
    base = save_model(_model(), _card(), tmp_path / "base.safetensors")
    samples = _hand_made_folder(tmp_path / "samples", n=3)
    # The parent does not compete: the question is what training changes, not whether it beat a random parent.
    options = FinetuneOptions(tile=64, epochs=1, lr=1e-3, device="cpu", train_layers="decoder", val_fraction=0.25, generated=samples, n_generated=3,
                              parent_competes=False)
    report = finetune(base, arctic_store, tmp_path / "student.safetensors", options)
    assert report.n_generated == 3
    card = read_card(report.model)
    generated = card.lineage["generated"]
    assert card.architecture == "saross" and (generated["lambda_ce"], generated["lambda_dice"], generated["lambda_kd"]) == (1.0, 0.5, 0.1)
    student, before = load_model(report.model)[0], load_model(base)[0].state_dict()
    assert isinstance(student, SarossNet)
    changed = {key for key, value in student.state_dict().items() if not torch.equal(before[key], value)}
    assert any(key.startswith("nodes.") for key in changed) and any(key.startswith("head.") for key in changed)
    assert not any(key.startswith("encoder.") for key in changed)


def test_detection_runs_with_a_saross_model(tmp_path, sample_scene):
    model = _model(tile=256)
    with torch.no_grad():
        model.head[-1].bias.fill_(-2.0)  # mostly sea: a random network's speckle of slicks takes long to trace
    path = save_model(model, _card(tile=256), tmp_path / "saross.safetensors")
    result = detect(sample_scene, tmp_path / "out", DetectOptions(model=str(path), device="cpu", min_area_km2=0.0))
    assert result.tiles == 16 and result.model_name == "tiny saross" and result.threshold == 0.5
    check_detection_rasters(result)


def test_pretraining_from_the_command_line_builds_a_saross_net(tmp_path, capsys):
    assert "saross" in ARCHITECTURES
    out = tmp_path / "pretrained.safetensors"
    args = ["pretrain", "--data", "synthetic", "--architecture", "saross", "--encoder", SMALL["encoder"],
            "--arch-kwargs", json.dumps(SMALL["arch_kwargs"]), "--train-tiles", "4", "--val-tiles", "2", "--tile", "64",
            "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    card = read_card(out)
    assert (card.architecture, card.encoder, card.arch_kwargs) == ("saross", SMALL["encoder"], SMALL["arch_kwargs"])
    assert "--architecture saross" in card.provenance["how"]
    assert isinstance(load_model(out)[0], SarossNet)
    # Without an encoder the pretraining recipe's own, smp's tu-resnet18, is taken as timm's resnet18.
    assert build_model(pretrain_card("saross")).encoder.feature_info.channels() == [64, 64, 128, 256, 512]


def test_onnx_runtimes_give_pytorch_s_probabilities_on_another_tile_size(tmp_path, monkeypatch):
    monkeypatch.setenv("SLICK_MAPPER_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = save_model(_model(tile=128, arch_kwargs={**SMALL["arch_kwargs"], "encoder_depth": 4, "decoder_channels": [32, 16, 16, 8]}),
                      _card(tile=128, arch_kwargs={**SMALL["arch_kwargs"], "encoder_depth": 4, "decoder_channels": [32, 16, 16, 8]}),
                      tmp_path / "saross.safetensors")
    tiles = np.stack(agreement.calibration_tiles(read_card(path), 2))[:, :96, :96]  # exported at 128, run at 96
    model, card = load_model(path)
    reference = Predictor(model, card, CPU, fast=False)(tiles)
    for runtime in ("onnxruntime", "openvino"):
        predictor, notes = runtimes.make_predictor(path, CPU, runtime)
        assert predictor.runtime == f"{runtime} fp32" and notes == []  # exported: no fallback to PyTorch
        assert np.abs(predictor(tiles) - reference).max() < 1e-3


@pytest.mark.parametrize("arch, message", [
    ({"heads": 3}, "3 attention heads do not divide"),
    ({"decoder_channels": [32, 16]}, "one entry per encoder level"),
    ({"encoder_depth": 2, "decoder_channels": [16, 8]}, "leaves no nested skip node"),
    ({"encoder_depth": 7, "decoder_channels": [8] * 7}, "fewer than 7 feature levels"),
])
def test_configurations_that_cannot_be_built_say_why(arch, message):
    with pytest.raises(ModelError, match=message):
        build_model(_card(arch_kwargs={**SMALL["arch_kwargs"], **arch}))


def test_unknown_encoders_are_refused():
    with pytest.raises(ModelError, match="Unknown encoder 'resnet_nonexistent' for saross"):
        build_model(_card(encoder="resnet_nonexistent"))


def test_mambavision_without_its_package_names_the_fallback_encoder(monkeypatch):
    monkeypatch.setitem(sys.modules, "mambavision", None)  # import fails, as where it is not installed
    with pytest.raises(ModelError, match="needs the mambavision package") as caught:
        build_model(_card(encoder="mamba_vision_B", arch_kwargs={"encoder_depth": 5}))
    assert FALLBACK_ENCODER in caught.value.hint


class _MambaVisionLike(nn.Module):
    """MambaVision's layout as its package builds it: a stem of two stride-2 convolutions, four levels of
    which the first three end by halving the grid and doubling the channels."""

    def __init__(self, in_dim: int = 4, dim: int = 8) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.conv_down = nn.Sequential(nn.Conv2d(1, in_dim, 3, 2, 1), nn.BatchNorm2d(in_dim), nn.ReLU(),
                                                   nn.Conv2d(in_dim, dim, 3, 2, 1), nn.BatchNorm2d(dim), nn.ReLU())
        self.levels = nn.ModuleList(nn.Conv2d(dim * 2**i, dim * 2 ** (i + 1), 3, 2, 1) for i in range(3))
        self.levels.append(nn.Conv2d(8 * dim, 8 * dim, 3, padding=1))


def test_mambavision_levels_become_five_feature_levels():
    encoder = MambaVisionFeatures(_MambaVisionLike(), depth=5)
    features = encoder(torch.rand(1, 1, 96, 96))
    assert [f.shape[1] for f in features] == encoder.channels == [4, 8, 16, 32, 64]
    assert [f.shape[-1] for f in features] == [48, 24, 12, 6, 3]
