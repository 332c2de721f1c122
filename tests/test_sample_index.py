"""The sample index changed by two processes at once: a generation adding samples and a keep/discard."""

from __future__ import annotations

import threading
import time

import numpy as np

from engine.generation import samples


def _folder(tmp_path):
    folder = tmp_path / "samples"
    generator = {"path": "g.safetensors", "name": "g", "sha256": "0" * 64, "tile_size": 8, "classes": ["water", "slick"],
                 "b": 0.5}
    key = samples.prepare(folder, generator)
    made = [samples.NewSample(np.full((8, 8), 100, np.uint8), np.zeros((2, 8, 8), np.float32), seed, [0, 1], "dpm++",
                              3, "cpu", 1) for seed in (0, 1)]
    samples.add(folder, key, made)
    return folder


def test_a_discard_made_while_another_process_updates_the_index_is_kept_and_so_is_the_other_change(tmp_path):
    folder = _folder(tmp_path)

    def slow_change(index):  # another writer, e.g. a generation, between its read and its write
        time.sleep(0.5)
        index["samples"][1]["kept"] = False

    writer = threading.Thread(target=samples._update_index, args=(folder, slow_change))
    writer.start()
    time.sleep(0.1)
    started = time.monotonic()
    samples.set_kept(folder, ["000001"], False)  # waits for the writer, then reads what it wrote
    writer.join()
    assert time.monotonic() - started > 0.2
    assert [s["kept"] for s in samples.read_index(folder)["samples"]] == [False, False]
