"""Where to label next: the engine ranks a probability raster's blocks by how unsure the model is."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio

from engine.errors import InputError
from engine.jobs.uncertainty import BLOCK, rank, rank_raster, strip_blocks, threshold_entropy
from engine.progress import Progress

ROOT = Path(__file__).resolve().parent.parent


def test_blocks_on_the_threshold_rank_first() -> None:
    assert threshold_entropy(np.array([0.3]), 0.3)[0] == pytest.approx(1.0)
    assert threshold_entropy(np.array([0.0, 1.0]), 0.3).max() < 1e-9
    strip = np.zeros((8, 24), np.float32)
    strip[:, 8:16] = 0.45  # unsure
    strip[:, 16:] = 0.99  # sure slick
    valid = np.ones_like(strip, bool)
    valid[:, :7] = False  # the first block is mostly outside the scene
    blocks = rank(strip_blocks(strip, valid, 0, 0.5, block=8))
    assert [b.col for b in blocks] == [8, 16]
    assert blocks[0].uncertainty > 0.95 and blocks[0].above == 0 and blocks[1].above == 1


@pytest.fixture
def probability(tmp_path: Path, sample_scene: Path) -> Path:
    """The real Arctic tile's backscatter read as probabilities, its top-left corner no data, on its own grid."""
    with rasterio.open(sample_scene) as ds:
        values = ds.read(1).astype(np.float32) / 255
        profile = dict(ds.profile, dtype="float32", nodata=float("nan"), compress="deflate")
    values[:300, :300] = np.nan
    path = tmp_path / "sample_1_probability.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(values, 1)
    return path


def test_a_real_raster_is_ranked_strip_by_strip_as_the_whole_array_would_be(probability: Path) -> None:
    with rasterio.open(probability) as ds:
        values, transform = ds.read(1), ds.transform
    threshold = float(np.nanmedian(values))
    entropy = threshold_entropy(np.nan_to_num(values), threshold)
    expected = []
    for row in range(0, values.shape[0], BLOCK):
        for col in range(0, values.shape[1], BLOCK):
            valid = np.isfinite(values[row:row + BLOCK, col:col + BLOCK])
            if valid.mean() >= 0.25:
                expected.append((entropy[row:row + BLOCK, col:col + BLOCK][valid].mean(), row, col))
    expected.sort(key=lambda e: (-e[0], e[1], e[2]))

    strips = []
    ranked = rank_raster(probability, threshold, progress=Progress(lambda stage, done, total, _: strips.append(done)))
    assert len(expected) == 8  # 768 px: 3 x 3 blocks, the no-data corner's block left out
    assert [(b.row, b.col) for b in ranked] == [(row, col) for _, row, col in expected]
    assert [b.uncertainty for b in ranked] == pytest.approx([u for u, _, _ in expected], abs=1e-9)
    assert strips == [0, 1, 2, 3]  # one read per strip of blocks
    first = ranked[0]
    left, top = transform * (first.col, first.row)
    right, bottom = transform * (first.col + first.cols, first.row + first.rows)
    assert first.extent == pytest.approx((left, bottom, right, top))
    assert len(rank_raster(probability, threshold, top=3)) == 3


def test_the_command_answers_in_json_and_refuses_a_threshold_outside_0_1(probability: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "engine", "--jsonl", "uncertainty", str(probability), *args],
                              cwd=ROOT, capture_output=True, text=True, timeout=300)

    done = run("--threshold", "0.4", "--top", "2")
    assert done.returncode == 0, done.stderr
    said = json.loads(done.stdout.splitlines()[-1])
    assert said["event"] == "result"
    assert said["data"]["blocks"] == [json.loads(json.dumps(b.to_dict())) for b in rank_raster(probability, 0.4, top=2)]
    refused = run("--threshold", "1")
    assert refused.returncode == 2 and "outside (0, 1)" in json.loads(refused.stdout.splitlines()[-1])["message"]
    with pytest.raises(InputError, match="not found"):
        rank_raster(probability.with_name("missing.tif"), 0.5)


def test_a_wide_raster_is_ranked_in_pieces_of_a_few_megapixels(tmp_path: Path) -> None:
    """Ranking reads whole blocks a few megapixels at a time: a 32,768-px-wide raster's full-width strips, scored in
    float64 at once, held about 30 times a strip's float32 bytes; the pieces rank as the whole array does."""
    import tracemalloc

    from affine import Affine

    from engine.scenes.tiling import STRIP_PIXELS

    height, width = 512, 32768
    values = np.random.default_rng(1).uniform(0, 1, (height, width)).astype(np.float32)
    values[:, :300] = np.nan
    path = tmp_path / "wide_probability.tif"
    with rasterio.open(path, "w", driver="GTiff", width=width, height=height, count=1, dtype="float32", tiled=True,
                       blockxsize=512, blockysize=512, nodata=float("nan"), crs="EPSG:32634",
                       transform=Affine(25.0, 0, 300000.0, 0, -25.0, 8700000.0)) as dst:
        dst.write(values, 1)
    entropy = threshold_entropy(np.nan_to_num(values), 0.5)
    expected = sorted(((-entropy[r:r + BLOCK, c:c + BLOCK][np.isfinite(values[r:r + BLOCK, c:c + BLOCK])].mean(), r, c)
                       for r in range(0, height, BLOCK) for c in range(0, width, BLOCK)
                       if np.isfinite(values[r:r + BLOCK, c:c + BLOCK]).mean() >= 0.25))[:5]
    del values, entropy
    tracemalloc.start()
    ranked = rank_raster(path, 0.5, top=5)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * STRIP_PIXELS * 4
    assert [(b.row, b.col) for b in ranked] == [(r, c) for _, r, c in expected]
    assert [b.uncertainty for b in ranked] == pytest.approx([-u for u, _, _ in expected], abs=1e-9)
