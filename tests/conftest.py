"""Shared fixtures: the real Arctic tiles copied into the project, and small real models."""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

# Tests that are not about runtimes run the model with PyTorch: "auto" would measure every new test model's
# runtimes first (exports, int8 calibration), minutes per model. The runtime tests choose theirs explicitly.
os.environ.setdefault("SLICK_MAPPER_RUNTIME", "torch")
# Under pytest-xdist each worker (and every engine process it starts) gets its share of the cores: OpenMP threads of
# two workers fighting over the same cores made small networks many times slower than one thread each.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))))

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "resources" / "samples" / "arctic_s1"
SMALL_MODEL = dict(encoder="tu-resnet10t", arch_kwargs={"encoder_depth": 3, "decoder_channels": [32, 16, 8]}, tile_size=256)
"""A segmentation model small enough to train for an epoch on a CPU in seconds (card fields). Untrained, its
probabilities on the real tiles lie within about 0.01 of 0.5, some above and some below, so a cut at 0.5 marks
specks, what the detection tests need."""
EXPERIMENT_MODEL = dict(encoder="tu-regnetx_002", arch_kwargs={"encoder_depth": 3, "decoder_channels": [32, 16, 8]}, tile_size=256)
"""The network the experiments' tests train and score dozens of times (card fields): RegNetX-200MF's first stages,
21 ms a 256-px tile on one thread of a 2-core Intel Xeon (CPU model 207), where ``SMALL_MODEL``'s three-convolution
stem took 37 ms; the suite ran in 697 s there instead of 919. Untrained it puts a whole tile just above 0.5, and a
detection then traces one slick the size of the scene, so the detection tests keep ``SMALL_MODEL``."""
TINY_NET = {
    "block_out_channels": [8, 16],
    "layers_per_block": 1,
    "down_block_types": ["DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 4,
}
"""A generator U-Net small enough to train a few steps on a CPU."""
GRD = ROOT / "resources" / "samples" / "s1_grd_crop"


@pytest.fixture(scope="session", autouse=True)
def fresh_user_cache(tmp_path_factory) -> None:
    """Every test run starts from an empty user cache (runtime choices, coastline windows) and an empty models folder
    (fine-tuned models, ``make quality-model``'s): no result depends on what the developer's own hold."""
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("user_cache"))
    os.environ["SLICK_MAPPER_MODELS"] = str(tmp_path_factory.mktemp("user_models"))


@pytest.fixture(scope="session")
def sample_scene() -> Path:
    return SAMPLES / "sample_1" / "raw_mosaic.tif"


@pytest.fixture(scope="session")
def grd_scene() -> Path:
    return GRD / "iw-vv.tiff"


def make_model(path: Path, **card_fields) -> Path:
    """A randomly initialised model of the default's architecture (no download, no training)."""
    import torch

    from engine.models.pretrain import DEFAULT_CARD
    from engine.models.registry import ModelCard, build_model, save_model

    torch.manual_seed(0)
    card = ModelCard(**{**DEFAULT_CARD, "name": "test model", **card_fields})
    return save_model(build_model(card), card, path)


def make_ensemble(member_path: Path, path: Path) -> Path:
    """The model at ``member_path`` beside itself with every float tensor scaled by 0.9, as one ensemble model file."""
    from engine.models.ensemble import member_spec
    from engine.models.registry import ModelCard, build_model, load_model, save_model

    member, card = load_model(member_path)
    ensemble_card = ModelCard.from_json(card.to_json())
    ensemble_card.architecture = "ensemble"
    ensemble_card.arch_kwargs = {"members": [member_spec(card.architecture, card.encoder, card.arch_kwargs)] * 2}
    ensemble = build_model(ensemble_card)
    ensemble.members[0].load_state_dict(member.state_dict())
    ensemble.members[1].load_state_dict({k: v * 0.9 if v.is_floating_point() else v for k, v in member.state_dict().items()})
    return save_model(ensemble, ensemble_card, path)


def check_detection_rasters(result) -> None:
    """A detection's probability is a probability over most of the scene, and its mask is that probability
    above the run's threshold wherever there is data."""
    import numpy as np
    import rasterio

    with rasterio.open(result.probability) as ds:
        prob = ds.read(1)
    valid = np.isfinite(prob)
    assert valid.mean() > 0.5 and 0 <= np.nanmin(prob) and np.nanmax(prob) <= 1 and np.nanstd(prob) > 0
    with rasterio.open(result.mask) as ds:
        mask = ds.read(1)
    assert ((prob > result.threshold) == (mask == 1))[valid].all()


def cancel_at(stage: str, done: int, log=None):
    """A Progress that cancels itself once ``stage`` has reported ``done`` steps, as a user pressing Cancel."""
    from engine.progress import Progress

    progress = Progress(lambda s, d, total, message: progress.cancel() if s == stage and d >= done else None, log=log)
    return progress


@contextmanager
def single_thread() -> Iterator[None]:
    """Torch on one thread for a while: networks this small run faster so, as ``one_thread`` says."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def one_thread():
    """Networks this small run faster on one thread: OpenMP's fork and join cost more than the work, and
    on a busy 2-core machine a training step took 0.05 s on one thread and 1.5 s on two. Modules of tiny
    generators take it with ``pytestmark = pytest.mark.usefixtures("one_thread")``. The experiments' modules do not:
    their students detect on whole real tiles, which two threads finished in two thirds of the time."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def arctic_store(tmp_path_factory) -> Path:
    """A label store holding sample_1's analysts' slicks, imported from its label mask: 576 usable 32-pixel tiles."""
    from engine.jobs.labels import create_store, import_mask

    path = create_store(tmp_path_factory.mktemp("store") / "labels.gpkg", "EPSG:4326")
    import_mask(path, SAMPLES / "sample_1" / "raw_mosaic.tif", SAMPLES / "sample_1" / "labels_mosaic.png")
    return path


@pytest.fixture(scope="session")
def model_factory():
    return make_model


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """An untrained ``SMALL_MODEL``: what detection does around the network (reading, tiling, writing, tracing) does
    not depend on its architecture, and the default's took five times as long a tile on a 2-core CPU."""
    return make_model(tmp_path_factory.mktemp("models") / "tiny.safetensors", **SMALL_MODEL)


@pytest.fixture(scope="session")
def pool_model(tmp_path_factory) -> Path:
    """An ``EXPERIMENT_MODEL`` fine-tuned for one epoch on the pool scenes' labels (engine/experiments/split.py): the
    starting model of the generator experiments' tests. An untrained one puts every pixel near 0.5, so its
    detection marks half or all of each test scene, and tracing a ResNet-10t's specks took 15 s for the three test
    scenes; this one marks mostly sea, as a trained parent does."""
    from engine.data.bundled import POOL
    from engine.experiments.transfer import label_store
    from engine.jobs.finetune import FinetuneOptions, finetune
    from engine.progress import Progress

    folder = tmp_path_factory.mktemp("pool_model")
    untrained = make_model(folder / "untrained.safetensors", **EXPERIMENT_MODEL)
    recipe = FinetuneOptions(tile=64, epochs=1, lr=1e-3, device="cpu", val_fraction=0.25, parent_competes=False, use_on="every")
    with single_thread():
        finetune(untrained, label_store(folder / "pool_labels.gpkg", POOL), folder / "pool.safetensors", recipe, Progress())
    return folder / "pool.safetensors"
