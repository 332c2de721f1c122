"""SamLoRA with tiny random configurations: shapes, what trains, model files, detection, SAM checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from engine.cli.main import main
from engine.errors import ModelError
from engine.jobs.detect import DetectOptions, detect
from engine.jobs.finetune import FinetuneOptions, finetune
from engine.jobs.labels import create_store, import_mask
from engine.models.registry import ModelCard, build_model, load_encoder_weights, load_model, read_card, save_model
from engine.models.training import trainable_parameters

from conftest import check_detection_rasters

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "resources" / "samples" / "arctic_s1"

TINY_VIT = dict(embed_dim=32, depth=2, num_heads=2, global_attn_indexes=[1], window_size=4, neck_chans=16)
"""A SAM ViT of the real layout (windowed and global blocks, neck) small enough for a test."""
TINY = dict(**TINY_VIT, decoder_channels=[16, 16, 8, 8], lora_rank=4, lora_alpha=4)


def _card(tile: int, arch: dict | None = None, **fields) -> ModelCard:
    """A tiny SamLoRA's card; ``arch`` changes its arch_kwargs."""
    return ModelCard(**{"name": "tiny samlora", "architecture": "samlora", "encoder": "samvit_base_patch16", "tile_size": tile,
                        "arch_kwargs": {"img_size": tile, **TINY, **(arch or {})}, **fields})


def _model(tile: int, **fields) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model(_card(tile, **fields))


def _with_trained_adapters(model: torch.nn.Module) -> torch.nn.Module:
    """LoRA's B starts at zero, which would hide adapters that are lost on the way; give them values."""
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.normal_(std=0.5)
    return model


def _names(model: torch.nn.Module) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


@pytest.mark.parametrize("tile", [128, 256])
@pytest.mark.parametrize("classes, channels", [(["water", "slick"], 1), (["sea", "oil", "look-alike", "ship", "land"], 5)])
def test_forward_gives_full_resolution_logits(tile, classes, channels):
    model = _model(tile, classes=classes).eval()
    with torch.inference_mode():
        assert model(torch.rand(2, 1, tile, tile)).shape == (2, channels, tile, tile)
        # Another multiple of 16 than the tile it was built for still runs: timm resamples the embeddings.
        assert model(torch.rand(1, 1, tile // 2, tile // 2)).shape == (1, channels, tile // 2, tile // 2)


def test_engine_commands_do_not_pay_for_importing_peft():
    code = "import sys, engine.cli.main, engine.models.registry, engine.jobs.detect; print('peft' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"  # peft loads transformers: seconds, only when a SamLoRA is built


def test_lora_adapters_are_the_only_trainable_encoder_parameters():
    model = _model(128)
    names = _names(model)
    adapters = {name for name in names.values() if "lora_" in name}
    assert adapters and all(name.startswith("encoder.blocks.") and ".attn.qkv." in name for name in adapters)
    decoder = {name for name in names.values() if name.startswith("decoder.")}

    trained = {names[id(p)] for p in trainable_parameters(model, "all")}
    assert trained == adapters | decoder
    assert {name for name, p in model.named_parameters() if p.requires_grad} == trained
    assert {names[id(p)] for p in trainable_parameters(model, "decoder")} == decoder
    assert not any(p.requires_grad for p in model.encoder.parameters())
    # The output projection can be adapted too, and nothing else.
    both = build_model(_card(128, {"lora_targets": ["qkv", "proj"]}))
    targets = {name.split(".lora_")[0].rsplit(".", 1)[1] for name, _ in both.named_parameters() if "lora_" in name}
    assert targets == {"qkv", "proj"}


def test_smp_models_keep_training_everything_or_the_decoder():
    unet = build_model(ModelCard(name="u", architecture="unet", encoder="resnet18"))
    assert len(trainable_parameters(unet, "all")) == len(list(unet.parameters()))
    frozen = set(map(id, unet.encoder.parameters()))
    assert {id(p) for p in trainable_parameters(unet, "decoder")} == {id(p) for p in unet.parameters()} - frozen


def test_model_file_round_trip_gives_identical_outputs(tmp_path):
    model = _with_trained_adapters(_model(128)).eval()
    card = _card(128)
    x = torch.rand(2, 1, 128, 128)
    with torch.inference_mode():
        before = model(x)
    again, card2 = load_model(save_model(model, card, tmp_path / "samlora.safetensors"))
    with torch.inference_mode():
        assert torch.equal(again(x), before)
    assert card2 == card
    half, _ = load_model(save_model(model, card, tmp_path / "half.safetensors", half=True))
    with torch.inference_mode():
        torch.testing.assert_close(half(x), before, atol=0.05, rtol=0.05)


def test_finetune_all_layers_on_arctic_labels_changes_only_adapters_and_decoder(tmp_path):
    parent_path = save_model(_model(128), _card(128), tmp_path / "parent.safetensors")
    store = create_store(tmp_path / "labels.gpkg", "EPSG:4326")
    import_mask(store, SAMPLES / "sample_1" / "raw_mosaic.tif", SAMPLES / "sample_1" / "labels_mosaic.png")
    parent, _ = load_model(parent_path)
    before = parent.state_dict()

    # The parent does not compete: the question is what training changes, not whether it beat the parent.
    options = FinetuneOptions(tile=128, epochs=1, lr=1e-3, device="cpu", val_fraction=0.25, parent_competes=False)
    report = finetune(parent_path, store, tmp_path / "tuned.safetensors", options)
    assert read_card(report.model).lineage["train_layers"] == "all"
    after = load_model(report.model)[0].state_dict()
    changed = {key for key in before if not torch.equal(before[key], after[key])}
    assert any("lora_B" in key for key in changed) and any(key.startswith("decoder.") for key in changed)
    assert all("lora_" in key or key.startswith("decoder.") for key in changed)  # the ViT is SAM's, bit for bit


def test_detection_runs_with_a_samlora_model(tmp_path, sample_scene):
    model = _with_trained_adapters(_model(256))
    with torch.no_grad():
        model.decoder[-1].bias.fill_(-1.0)  # mostly sea: a random network's speckle of slicks takes a minute to trace
    path = save_model(model, _card(256), tmp_path / "samlora.safetensors")
    result = detect(sample_scene, tmp_path / "out", DetectOptions(model=str(path), device="cpu", min_area_km2=0.0))
    assert result.tiles == 16 and result.model_name == "tiny samlora" and result.threshold == 0.5
    check_detection_rasters(result)


# -- SAM checkpoints ------------------------------------------------------------------------------------

def _sam_encoder(img_size: int = 256, **vit) -> torch.nn.Module:
    """A three-channel SAM ViT with non-trivial weights, standing in for the pretrained one."""
    torch.manual_seed(1)
    encoder = timm.create_model("samvit_base_patch16", pretrained=False, img_size=img_size, num_classes=0, **{**TINY_VIT, **vit})
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.normal_(std=0.2)
    return encoder.eval()


def _official_file(encoder: torch.nn.Module, path: Path) -> Path:
    """The layout of SAM's own sam_vit_b_01ec64.pth: a pickled state dict of the whole SAM."""
    state = {"image_encoder." + k.replace("mlp.fc", "mlp.lin"): v for k, v in encoder.state_dict().items()}
    state["prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"] = torch.rand(2, 8)
    state["mask_decoder.iou_token.weight"] = torch.rand(1, 8)
    torch.save(state, path)
    return path


def _timm_file(encoder: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def sam_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sam")
    encoder = _sam_encoder()
    return encoder, {"official": _official_file(encoder, folder / "sam_vit_tiny.pth"), "timm": _timm_file(encoder, folder / "samvit_tiny.safetensors")}


@pytest.mark.parametrize("layout", ["official", "timm"])
@pytest.mark.parametrize("tile", [128, 256])
def test_sam_checkpoints_load_and_give_sams_features(sam_files, layout, tile):
    sam, files = sam_files
    model = _with_trained_adapters(_model(tile)).eval()
    untouched = {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k or k.startswith("decoder.")}
    load_encoder_weights(model, files[layout])
    assert all(torch.equal(model.state_dict()[k], v) for k, v in untouched.items())
    grid = tile // 16
    assert model.encoder.pos_embed.shape == (1, grid, grid, 32)
    assert model.encoder.blocks[1].attn.rel_pos_h.shape == (2 * grid - 1, 16)  # the global block's table

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.zero_()  # adapters that have learnt nothing yet: the encoder must be SAM's
        x = torch.rand(2, 1, tile, tile)
        rgb = (x.repeat(1, 3, 1, 1) - torch.tensor(IMAGENET_DEFAULT_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_DEFAULT_STD).view(1, 3, 1, 1)
        ours, sams = model.encoder.forward_features(x), sam.forward_features(rgb)
    assert sams.abs().mean() > 0.1
    torch.testing.assert_close(ours, sams, atol=1e-4, rtol=1e-4)


def test_wrong_checkpoints_fail_clearly_and_change_nothing(tmp_path, sam_files):
    model = _model(128)
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def attempt(path, message):
        with pytest.raises(ModelError, match=message):
            load_encoder_weights(model, path)
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    wider = _official_file(_sam_encoder(embed_dim=48, num_heads=3), tmp_path / "sam_vit_wider.pth")
    attempt(wider, r"another size than samvit_base_patch16: pos_embed is \(1, 16, 16, 48\), this model's \(1, 8, 8, 32\)")
    unet = build_model(ModelCard(name="u", architecture="unet", encoder="resnet18"))
    attempt(_timm_file(unet.encoder, tmp_path / "resnet18.safetensors"), "not a samvit_base_patch16 checkpoint.*sam_vit_b_01ec64.pth")
    notes = tmp_path / "notes.pth"
    notes.write_text("not weights")
    attempt(notes, "not a readable checkpoint")
    attempt(tmp_path / "missing.pth", "not found")
    two_bands = build_model(_card(128, in_channels=2))
    with pytest.raises(ModelError, match="cannot be fitted to 2 input bands"):
        load_encoder_weights(two_bands, sam_files[1]["official"])


@pytest.mark.parametrize("card, message", [
    (_card(128, encoder="samvit_huge_patch17"), "Unknown encoder 'samvit_huge_patch17' for samlora. Known encoders: samvit_base_patch16"),
    (_card(128, {"lora_targets": ["fc1"]}), r"Unknown LoRA targets \['fc1'\]"),
    (_card(128, {"decoder_channels": [8, 8]}), "needs 4 stages"),
    (_card(128, {"embed_dims": 8}), "arch_kwargs do not fit samlora"),
])
def test_bad_cards_are_model_errors(card, message):
    with pytest.raises(ModelError, match=message):
        build_model(card)


def test_cli_pretrains_a_samlora_from_a_sam_checkpoint(tmp_path, sam_files, capsys):
    sam, files = sam_files
    out = tmp_path / "samlora.safetensors"
    args = ["--jsonl", "pretrain", "--data", "synthetic", "--architecture", "samlora", "--encoder", "samvit_base_patch16",
            "--arch-kwargs", json.dumps({"img_size": 64, **TINY}), "--encoder-weights", str(files["official"]),
            "--train-tiles", "4", "--val-tiles", "2", "--tile", "64", "--epochs", "1", "--batch-size", "2"]
    assert main(args) == 2  # another network than the bundled one needs --out
    assert "--out is needed" in json.loads(capsys.readouterr().out.splitlines()[-1])["message"]
    assert main([*args, "--out", str(out)]) == 0
    model, card = load_model(out)
    assert card.architecture == "samlora" and card.arch_kwargs["img_size"] == 64
    assert "--encoder-weights sam_vit_tiny.pth" in card.provenance["how"]
    # Pretraining trained the adapters and the decoder; the ViT is SAM's, as loaded (float16 in the file).
    reference = _model(64)
    load_encoder_weights(reference, files["official"])
    frozen = {k: v for k, v in reference.encoder.state_dict().items() if "lora_" not in k}
    trained = model.encoder.state_dict()
    assert all(torch.equal(v.half().float(), trained[k]) for k, v in frozen.items())
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in trained.items())
