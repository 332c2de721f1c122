"""Which acquisition a scene file holds, whatever its path: the key of a threshold calibrated on its labels.

A threshold calibrated on an analyst's labels of one scene suits that scene (its wind, incidence and
stretch) and not others: on the bundled real tiles, a fine-tuned model's threshold of 0.65 raised its own
scene from Dice 0.30 to 0.54 and dropped two other scenes from 0.42 and 0.59 to 0.16 and 0.27
(docs/within_scene.md). Paths change (a scene copied, moved, or opened on another machine) and the bundled
tiles share a file name, so the key is the file's size and a hash of its first and last mebibyte: cheap on a
gigabyte GRD, and different for any two acquisitions, whose headers differ.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

CHUNK = 1 << 20


def scene_fingerprint(path: str | Path) -> str:
    size = os.path.getsize(path)
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        digest.update(f.read(CHUNK))
        if size > CHUNK:
            f.seek(max(CHUNK, size - CHUNK))
            digest.update(f.read(CHUNK))
    return digest.hexdigest()[:16]
