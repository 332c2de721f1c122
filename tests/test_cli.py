"""The engine as the plugin's worker and a batch job see it: a separate process speaking JSON lines."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from engine.data.synth import SceneSpec, write_scene
from engine.jobs.uncertainty import rank_raster

ROOT = Path(__file__).resolve().parent.parent


def engine(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "engine", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_engine_never_imports_qt_or_qgis() -> None:
    code = ("import sys, engine.cli.main, engine.jobs.detect, engine.jobs.finetune, engine.jobs.labels, engine.experiments.demo; "
            "[engine.cli.main.build_parser(c) for c in engine.cli.main.COMMANDS]; "  # every command's module
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('qgis', 'PyQt5', 'PyQt6', 'sip')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


LIGHT_COMMANDS = ("info", "measure", "models", "doctor", "evaluate", "uncertainty", "synth", "labels", "samples", "seeps")
"""Commands whose parsers import no PyTorch; ``doctor`` imports it when it runs, to report on it."""


def test_light_commands_start_without_pytorch(tmp_path: Path, sample_scene: Path) -> None:
    """Importing PyTorch and the networks' packages costs seconds, which the plugin would wait on each time
    it checks a scene, lists the models or makes a label store; those commands need none of it, nor does the
    overview of ``--help``."""
    runs = [["labels", "init", str(tmp_path / "labels.gpkg"), "--crs", "EPSG:32636"], ["models"], ["info", str(sample_scene)],
            ["measure", str(sample_scene)]]
    code = (f"import sys; from engine.cli.main import build_parser, main; [build_parser(c) for c in {LIGHT_COMMANDS!r}]; build_parser(); "
            f"codes = [main(['--jsonl', *argv]) for argv in {runs!r}]; "
            "print(codes, sorted(m for m in ('torch', 'torchvision', 'timm', 'segmentation_models_pytorch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines()[-1] == "[0, 0, 0, 0] []", out.stderr


def test_detect_speaks_json_lines_and_ends_with_the_result(tmp_path: Path, sample_scene: Path, tiny_model: Path) -> None:
    run = engine("--jsonl", "detect", str(sample_scene), "--out", str(tmp_path), "--model", str(tiny_model), "--tile", "256")
    stdout, stderr = run.communicate(timeout=300)
    assert run.returncode == 0, stderr
    said = events(stdout)
    stages = [e["stage"] for e in said if e["event"] == "progress"]
    assert {"tiles", "polygons", "writing", "done"} <= set(stages)  # an 8-bit tile needs no statistics
    assert said[-1]["event"] == "result"
    data = said[-1]["data"]
    assert Path(data["slicks"]).exists()
    ranked = rank_raster(data["probability"], data["threshold"])  # where to label next comes with the result
    assert data["uncertain_blocks"] == [json.loads(json.dumps(block.to_dict())) for block in ranked] and ranked


def test_bad_input_is_one_error_event_and_exit_code_2(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff at all")
    run = engine("--jsonl", "detect", str(broken), "--out", str(tmp_path / "out"))
    stdout, _ = run.communicate(timeout=120)
    said = events(stdout)
    assert run.returncode == 2
    assert said[-1]["event"] == "error" and "broken.tif" in said[-1]["message"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_sigterm_cancels_cleanly_with_exit_130(tmp_path: Path, tiny_model: Path) -> None:
    scene = write_scene(SceneSpec(height=2048, width=2048, seed=11), tmp_path / "big.tif")
    out = tmp_path / "out"
    run = engine("--jsonl", "detect", str(scene), "--out", str(out), "--model", str(tiny_model), "--tile", "256")
    deadline = time.monotonic() + 120
    for line in run.stdout:  # wait until tiles are being predicted, then stop the run
        if '"tiles"' in line or time.monotonic() > deadline:
            break
    run.send_signal(signal.SIGTERM)
    stdout, _ = run.communicate(timeout=60)
    assert run.returncode == 130
    assert events(stdout)[-1]["event"] == "cancelled"
    assert list(out.iterdir()) == []  # the staging folder went with the run


def test_cli_options_are_the_options_dataclasses_with_their_defaults() -> None:
    from engine.cli.args import options_from
    from engine.cli.main import parse_args
    from engine.jobs.detect import DetectOptions
    from engine.archive.seeps import SeepOptions
    from engine.experiments.transfer import TransferOptions
    from engine.generation.generator import GeneratorOptions
    from engine.experiments.cli import LOSO_RECIPE
    from engine.jobs.finetune import FinetuneOptions
    plain = parse_args(["detect", "s.tif", "--out", "o"])
    assert options_from(plain, DetectOptions) == DetectOptions()
    given = parse_args(["detect", "s.tif", "--out", "o", "--overlap", "32", "--min-area-km2", "0",
                               "--bounds", "1", "2", "3", "4", "--source-grid", "--band", "VV"])
    assert options_from(given, DetectOptions, bounds=tuple(given.bounds)) == DetectOptions(
        overlap=32, min_area_km2=0.0, bounds=(1.0, 2.0, 3.0, 4.0), source_grid=True, band="VV")
    tuned = parse_args(["finetune", "--base", "b", "--labels", "l", "--out", "o", "--lr", "auto", "--n-generated", "3"])
    assert options_from(tuned, FinetuneOptions) == FinetuneOptions(n_generated=3, lr=None)
    batch = parse_args(["batch", "a.tif", "--out", "o", "--overlap", "32"])
    assert options_from(batch, DetectOptions) == DetectOptions(overlap=32)
    quick = parse_args(["batch", "a.tif", "--out", "o", "--no-tta"])  # an option on by default has its --no- form
    assert options_from(quick, DetectOptions) == DetectOptions(tta=False) != DetectOptions()
    assert options_from(parse_args(["seeps", "c", "--out", "s.gpkg"]), SeepOptions) == SeepOptions()
    sites = parse_args(["seeps", "c", "--out", "s.gpkg", "--distance", "500", "--min-scenes", "4"])
    assert options_from(sites, SeepOptions) == SeepOptions(distance_m=500.0, min_scenes=4)
    generator = parse_args(["generator", "train", "--labels", "l", "--out", "g", "--slick-share", "uniform", "--b", "2"])
    assert options_from(generator, GeneratorOptions) == GeneratorOptions(slick_share=None, b=2.0)
    scene = parse_args(["synth", "--out", "s.tif", "--seeps", "0", "--land"])
    assert options_from(scene, SceneSpec, height=1024, width=1024) == SceneSpec(n_seeps=0, land=True)
    loso = parse_args(["experiment", "loso", "--epochs", "2"])
    assert options_from(loso, LOSO_RECIPE) == replace(LOSO_RECIPE, epochs=2)
    experiment = TransferOptions()  # an experiment's recipe keeps its own defaults where the command line is silent
    runs = parse_args(["experiment", "transfer", "--epochs", "3"])
    assert options_from(runs, experiment.recipe) == replace(experiment.recipe, epochs=3)
    assert options_from(runs, experiment, ns=experiment.ns, recipe=experiment.recipe) == experiment


def test_an_engine_process_holds_a_few_blocks_of_a_scene_it_reads_whole(tmp_path: Path) -> None:
    """``measure`` reads every pixel of a scene; GDAL's default block cache (5 % of RAM) kept what it read, so the
    process grew by the scene's decompressed size (1.2 GB on this 24 GB machine). The engine bounds the cache when it
    starts (``block_cache``), and what it holds besides is its strips of a few megapixels."""
    import numpy as np
    import rasterio
    from affine import Affine

    side = 16384
    rows = np.linspace(0.01, 0.2, side, dtype=np.float32)  # a smooth field: compressed small, decompressed 1 GB
    path = tmp_path / "wide_sigma0.tif"
    with rasterio.open(path, "w", driver="GTiff", width=side, height=side, count=1, dtype="float32", tiled=True, compress="deflate",
                       crs="EPSG:32634", transform=Affine(25.0, 0, 300000.0, 0, -25.0, 8700000.0)) as dst:
        for top in range(0, side, 1024):
            dst.write(np.broadcast_to(rows, (1024, side)), 1, window=((top, top + 1024), (0, side)))
    code = ("import sys; from engine.cli.main import main; import rasterio, numpy; "
            "status = lambda key: int(next(l for l in open('/proc/self/status') if l.startswith(key)).split()[1]) * 1024; "
            "before = status('VmRSS:'); code = main(['--jsonl', 'measure', sys.argv[1]]); "
            "print(code, status('VmHWM:') - before)")
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, check=True, timeout=300)
    code, grew = map(int, out.stdout.splitlines()[-1].split())
    assert code == 0, out.stderr
    assert grew < side * side * 4 / 2, f"the process grew by {grew / 2**20:.0f} MB reading a {side * side * 4 / 2**20:.0f} MB scene"
