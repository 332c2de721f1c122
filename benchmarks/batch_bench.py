"""Throughput of batch detection on Dask: scenes per hour with one and two workers, peak memory per worker,
and the batch's overhead against running ``engine detect`` scene by scene.

    .venv/bin/python benchmarks/batch_bench.py            # 8 synthetic EW scenes of 512 x 512 pixels
    .venv/bin/python benchmarks/batch_bench.py --quick    # 4 scenes of 256 x 256

All three runs use the same scenes, the bundled model trained on synthetic scenes, 256-pixel tiles and the CPU, each as a fresh
command line (cluster start-up and model loading included, as an analyst meets them). Ratios are taken
within one run; the load average is recorded beside them because this machine is shared.
Results go to bench_output/batch_bench.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import report  # noqa: E402

from engine.archive.manifest import Manifest  # noqa: E402
from engine.data.synth import SceneSpec, write_scene  # noqa: E402
from engine.models.registry import SYNTHETIC_MODEL  # noqa: E402


def engine(*args: str) -> float:
    """Wall seconds of one engine command line."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=ROOT / "bench_output" / "batch_bench.json")
    args = parser.parse_args()
    n, size = (4, 256) if args.quick else (8, 512)
    results = {"machine": report.machine(), "scenes": n, "size_px": size}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "scenes"
        folder.mkdir()
        for i in range(n):
            write_scene(SceneSpec(height=size, width=size, seed=i, n_seeps=2), folder / f"S1A_EW_GRDM_1SDH_202401{i + 1:02d}T050000_b.tif")
        scenes = sorted(str(p) for p in folder.glob("*.tif"))
        common = ("--model", str(SYNTHETIC_MODEL), "--tile", "256", "--device", "cpu")
        one_by_one = sum(engine("detect", scene, "--out", f"{tmp}/single", "--overwrite", *common) for scene in scenes)
        timings, peaks = {}, {}
        for workers in (1, 2):
            out = f"{tmp}/batch{workers}"
            timings[workers] = engine("batch", str(folder), "--out", out, "--workers", str(workers), *common)
            peaks[workers] = max(r.worker_peak_mb for r in Manifest.load(Path(out)).done())
    results.update({
        "detect_one_by_one_s": round(one_by_one, 1),
        "batch_1_worker_s": round(timings[1], 1),
        "batch_2_workers_s": round(timings[2], 1),
        "scenes_per_hour_1_worker": round(n / timings[1] * 3600),
        "scenes_per_hour_2_workers": round(n / timings[2] * 3600),
        "speedup_2_vs_1_workers": round(timings[1] / timings[2], 2),
        "overhead_batch_1_worker_vs_detect_one_by_one": round(timings[1] / one_by_one, 2),
        "peak_mb_per_worker_1": peaks[1],
        "peak_mb_per_worker_2": peaks[2],
    })
    report.print_table(["figure", "value"], [[k, str(v)] for k, v in results.items() if k != "machine"])
    report.finish(results, args.out)
    print(json.dumps(results["machine"]))


if __name__ == "__main__":
    main()
