"""``changes``: a fine-tuned model's map against its parent's on the same scene, slick by slick."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import fiona
import numpy as np
import pytest
import rasterio
import shapely
import torch
from shapely.geometry import shape

from engine.cli.main import main
from engine.contract import SLICKS_LAYER
from engine.errors import Cancelled, InputError
from engine.jobs.changes import detect_changes
from engine.jobs.detect import DetectOptions, detect
from engine.models.registry import load_model, read_card, save_model
from engine.progress import Progress
from engine.scenes.fingerprint import scene_fingerprint

from conftest import SAMPLES, SMALL_MODEL

SCENE = SAMPLES / "sample_1" / "raw_mosaic.tif"
OPTIONS = DetectOptions(tile=256, runtime="torch", tta=False, threshold=0.5, land_mask="none")


@pytest.fixture(scope="module")
def top_percent(pool_model, tmp_path_factory) -> float:
    """The parent's probability its top percent of the scene lies above: a cut where it marks a score of slicks,
    wherever one epoch of training left its probabilities (one left no patch above 0.5 large enough to keep here)."""
    result = detect(SCENE, tmp_path_factory.mktemp("parent"), replace(OPTIONS, model=str(pool_model)))
    with rasterio.open(result.probability) as ds:
        return round(float(np.nanquantile(ds.read(1), 0.99)), 4)


def _child(parent: Path, path: Path, logit_shift: float, taught: tuple[Path, ...] = ()) -> Path:
    """``parent`` with every output logit moved by ``logit_shift``, carded as fine-tuned from it: its slicks hold all
    the parent's (shift > 0) or lie inside them (shift < 0), so which slicks are new and which gone is known."""
    model, card = load_model(parent)
    with torch.no_grad():
        model.segmentation_head[0].bias += logit_shift
    lineage = {"parent": {"path": str(parent), "name": card.name, "sha256": hashlib.sha256(parent.read_bytes()).hexdigest(),
                          "lineage": None}}
    return save_model(model, replace(card, name=f"{card.name} shifted {logit_shift:+g}", lineage=lineage,
                                     taught_scenes=[scene_fingerprint(scene) for scene in taught]), path)


def _outlines(path: str) -> list:
    with fiona.open(path, layer=SLICKS_LAYER) as src:
        return [(shape(f["geometry"]), dict(f["properties"])) for f in src]


@pytest.mark.parametrize("shift", [1.5, -1.5])
def test_new_and_gone_slicks_are_those_the_other_map_has_no_area_of(tmp_path, pool_model, top_percent, shift):
    child = _child(pool_model, tmp_path / "child.safetensors", shift, taught=(SCENE,))
    result = detect_changes(SCENE, tmp_path / "out", replace(OPTIONS, model=str(child), threshold=top_percent), Progress())
    mine, theirs = _outlines(result["slicks"]), _outlines(result["parent"]["slicks"])
    assert len(mine) == result["n_slicks"] and len(theirs) == result["parent"]["n_slicks"] > 0
    assert result["model_name"] == read_card(child).name and result["parent"]["model_name"] == read_card(pool_model).name
    theirs_union = shapely.union_all([g for g, _ in theirs])
    mine_union = shapely.union_all([g for g, _ in mine])
    changes = _outlines(result["changes"])
    new = [g for g, p in changes if p["change"] == "new"]
    gone = [g for g, p in changes if p["change"] == "gone"]
    assert len(new) + len(gone) == len(changes)
    expected_new = [g for g, _ in mine if g.intersection(theirs_union).area == 0]
    expected_gone = [g for g, _ in theirs if g.intersection(mine_union).area == 0]
    assert sorted(g.wkb for g in new) == sorted(g.wkb for g in expected_new)
    assert sorted(g.wkb for g in gone) == sorted(g.wkb for g in expected_gone)
    assert result["new_slicks"] == len(new) and result["gone_slicks"] == len(gone)
    assert result["both_slicks"] == len(mine) - len(new)
    assert result["new_area_km2"] == pytest.approx(sum(p["area_km2"] for _, p in changes if p["change"] == "new"), abs=1e-3)
    # A model more sure of slicks everywhere loses none of its parent's, and one less sure finds none the parent missed.
    if shift > 0:
        assert gone == [] and len(new) > 0
    else:
        assert new == [] and len(gone) > 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        [f"raw_mosaic{tag}{suffix}" for tag in ("", "_parent") for suffix in ("_probability.tif", "_mask.tif", "_slicks.gpkg")]
        + ["raw_mosaic_changes.gpkg"])


def test_the_command_line_refuses_what_it_cannot_compare_and_writes_nothing(tmp_path, pool_model, model_factory, capsys):
    out = tmp_path / "out"

    def refused(model: Path, scene: Path = SCENE) -> str:
        capsys.readouterr()
        assert main(["changes", str(scene), "--out", str(out), "--model", str(model), "--no-tta", "--runtime", "torch"]) == InputError.exit_code
        assert not out.exists() or list(out.iterdir()) == []
        return capsys.readouterr().err

    plain = model_factory(tmp_path / "plain.safetensors", **SMALL_MODEL)
    assert "was not fine-tuned from another model, so there is no parent to compare it with" in refused(plain)
    taught = _child(pool_model, tmp_path / "taught.safetensors", 1.0, taught=(SAMPLES / "sample_2" / "raw_mosaic.tif",))
    assert "detects with its parent's weights (it learnt from labels of other scenes)" in refused(taught)
    orphan = _child(pool_model, tmp_path / "orphan.safetensors", 1.0)
    card = read_card(orphan)
    moved = dict(card.lineage["parent"], path=str(tmp_path / "gone.safetensors"), sha256="0" * 64)
    save_model(load_model(orphan)[0], replace(card, lineage={"parent": moved}), orphan)
    assert "is no longer at" in refused(orphan)


def test_a_cancel_during_the_parent_s_detection_leaves_the_folder_as_it_was(tmp_path, pool_model):
    child = _child(pool_model, tmp_path / "child.safetensors", 1.0)
    out = tmp_path / "out"
    out.mkdir()
    (out / "kept.txt").write_text("an analyst's file")
    finished = []
    progress = Progress(lambda stage, done, total, message: (finished.append(stage) if stage == "done" else None,
                                                             progress.cancel() if finished else None))
    with pytest.raises(Cancelled):
        detect_changes(SCENE, out, replace(OPTIONS, model=str(child)), progress)
    assert finished == ["done"]  # the fine-tuned model's detection had finished
    assert [p.name for p in out.iterdir()] == ["kept.txt"]
