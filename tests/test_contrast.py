"""The U-Net fed each pixel's local darkness: it starts as the model it was made from, its extra channel does not
move with a scene's grey levels, and it detects through the product's own path."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import torch

from engine.errors import ModelError
from engine.jobs.detect import DetectOptions, detect
from engine.models.contrast import with_contrast
from engine.models.registry import load_model
from engine.progress import Progress

from conftest import SAMPLES, SMALL_MODEL


@pytest.fixture(scope="module")
def pair(tmp_path_factory, model_factory):
    folder = tmp_path_factory.mktemp("contrast")
    source = model_factory(folder / "unet.safetensors", **SMALL_MODEL)
    return source, with_contrast(source, folder / "contrast.safetensors")


def _tile() -> torch.Tensor:
    """A real stretched Arctic tile (sample_1, 8-bit eq. 1 levels), with a no-data corner, as the network is fed it."""
    with rasterio.open(SAMPLES / "sample_1" / "raw_mosaic.tif") as ds:
        values = ds.read(1)[:128, :128].astype(np.float32)
    values[:20, :30] = 0.0
    return torch.from_numpy(values)[None, None] / 255


def test_it_starts_as_the_model_it_was_made_from(pair):
    (source, _), (contrast, card) = load_model(pair[0]), load_model(pair[1])
    assert card.architecture == "unet_contrast" and card.arch_kwargs["window"] == 63 and card.in_channels == 1
    x = _tile()
    with torch.inference_mode():
        assert torch.allclose(source(x), contrast(x), atol=1e-5)
        stem = next(m for m in contrast.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels == 2)
        assert (stem.weight[:, 1:] == 0).all() and stem.weight[:, :1].abs().sum() > 0
        stem.weight[:, 1:] = 1.0  # once training uses the darkness channel, it tells
        assert not torch.allclose(source(x), contrast(x), atol=1e-3)


def test_the_darkness_channel_is_the_same_for_any_grey_levels_of_the_sea(pair):
    contrast, _ = load_model(pair[1])
    fed: list[torch.Tensor] = []
    contrast.net.register_forward_pre_hook(lambda module, args: fed.append(args[0]))
    x = _tile()
    valid = x > 0
    darker = torch.where(valid, 0.6 * x + 0.05, x)  # a calmer scene's stretch: the same sea, other grey levels
    with torch.inference_mode():
        contrast(x), contrast(darker)
    first, second = fed[0][0, 1], fed[1][0, 1]
    assert torch.equal(fed[1][0, 0], darker[0, 0])
    assert first[valid[0, 0]].abs().mean() > 0.1 and (first[~valid[0, 0]] == 0).all()
    inner = valid[0, 0].clone()
    inner[:40, :50] = False  # the std floor of a few levels weighs differently by the corner's few pixels
    assert torch.allclose(first[inner], second[inner], atol=0.02)


def test_training_groups_its_encoder_as_a_unet_s(pair):
    from engine.models.training import parameter_groups

    contrast, _ = load_model(pair[1])
    groups = parameter_groups(contrast)
    assert groups["encoder"] and len(groups["encoder"]) + len(groups["decoder"]) == len(list(contrast.parameters()))


def test_only_a_unet_is_made_into_one(pair, tmp_path):
    with pytest.raises(ModelError, match="not a U-Net"):
        with_contrast(pair[1], tmp_path / "again.safetensors")


def test_it_detects_through_the_product(pair, tmp_path):
    result = detect(SAMPLES / "sample_1" / "raw_mosaic.tif", tmp_path, DetectOptions(model=str(pair[1]), runtime="torch", tta=False),
                    Progress())
    with rasterio.open(result.probability) as ds:
        p = ds.read(1)
    assert np.isfinite(p).mean() > 0.9 and 0 <= np.nanmin(p) and np.nanmax(p) <= 1
