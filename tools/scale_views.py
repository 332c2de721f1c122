"""Leave one scene out with each tile's mirror views averaged over input scales as well: a probe, not a product option.

``.venv/bin/python tools/scale_views.py SCALES -- experiment benchmark --only NAME --seed S --device cpu --out DIR``

``SCALES`` (comma-separated, e.g. ``1,1.25``): each tile is also resampled bilinearly to that many times its size
(rounded to a multiple of 32 px, as the U-Net needs), mapped with the usual four mirror views, and the probability
resampled back; detection averages the scales' probabilities. Everything after ``--`` is the engine's own command,
run with PyTorch (the benchmark's runtime): fold models already in ``DIR/models`` are reused, so linking a run's
``models`` folder there scores its models without training. A larger scale shows the network thin strands wider than
it learnt them, a smaller one more sea around a slick; what it costs is the scales' pixels over the tile's.
"""

from __future__ import annotations

import sys

import numpy as np

import run_page  # noqa: F401  beside this file: puts the project on the path

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from engine.cli.main import main  # noqa: E402
from engine.models import eager  # noqa: E402


def resized(tiles: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    x = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32))[:, None]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def over_scales(scales: list[float]):
    """``EagerForward.mean_probability`` averaged over ``scales`` of the tiles."""
    mirrored = eager.EagerForward.mean_probability

    def mean_probability(self, tiles, scale, card, views, images_per_call):
        height, width = tiles.shape[-2:]
        total = np.zeros(tiles.shape, dtype=np.float32)
        for factor in scales:
            size = (int(round(height * factor / 32)) * 32, int(round(width * factor / 32)) * 32)
            if size == (height, width):
                total += mirrored(self, tiles, scale, card, views, images_per_call)
            else:
                total += resized(mirrored(self, resized(tiles, size), scale, card, views, images_per_call), (height, width))
        return total / len(scales)

    return mean_probability


if __name__ == "__main__":
    if len(sys.argv) < 3 or sys.argv[2] != "--":
        raise SystemExit(__doc__)
    eager.EagerForward.mean_probability = over_scales([float(s) for s in sys.argv[1].split(",")])
    sys.exit(main(sys.argv[3:]))
