"""A screenshot of desktop QGIS with Slick Mapper after a detection, as an analyst sees it.

    .venv/bin/python tools/desktop_screenshot.py [--out docs/qgis_desktop.png] [--scene SAMPLE | --scene FILE]
        [--model FINE_TUNED.safetensors [--against-parent]]

It runs the real application (Debian's ``qgis``, on a virtual screen from ``xvfb-run``) in a throw-away
profile with the plugin linked from this checkout (tools/qgis_dev.py), and hands QGIS a ``--code`` script
that waits for the plugin to be loaded, adds a copy of a bundled Arctic tile (or of any raster file, to see
the product on another scene), opens the dock, presses
**Detect slicks** (with ``--model``, that model chosen; with ``--against-parent``, *Show what fine-tuning changed*
ticked) and, once the result group is drawn, grabs the main window. Nothing in the checkout or
in the analyst's own profile is written, except the PNG.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from qgis_dev import PLUGIN, enable_plugin, link_plugin, profile_folder

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "resources" / "samples" / "arctic_s1"
SESSION = Path(__file__).resolve().parent / "screenshot_session.py"
SCREEN = "1600x1000x24"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "qgis_desktop.png")
    parser.add_argument("--scene", default="sample_1", help="bundled Arctic sample (default sample_1) or a raster file's path")
    parser.add_argument("--model", type=Path, help="a model file to detect with (copied into the throw-away models folder)")
    parser.add_argument("--against-parent", action="store_true", help="with a fine-tuned --model: show what fine-tuning changed")
    parser.add_argument("--timeout", type=int, default=300, help="seconds before QGIS is stopped (default 300)")
    args = parser.parse_args()
    if args.model is not None and not args.model.is_file():
        sys.exit(f"{args.model} is not a model file.")
    for tool in ("qgis", "xvfb-run"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: `make qgis` installs desktop QGIS; xvfb comes with `make venv`.")
    with tempfile.TemporaryDirectory(prefix="slick-shot-") as tmp:
        work = Path(tmp)
        profiles = work / "profiles"
        profile = profile_folder(profiles, "shot")
        link_plugin(profile / "python" / "plugins")
        enable_plugin(profile)
        source = Path(args.scene) if Path(args.scene).is_file() else SAMPLES / args.scene / "raw_mosaic.tif"
        if not source.is_file():
            sys.exit(f"{args.scene} is neither a raster file nor a bundled Arctic sample ({', '.join(sorted(p.name for p in SAMPLES.iterdir() if p.is_dir()))}).")
        # A copy keeps the checkout unwritten (QGIS and GDAL leave .aux.xml files); the name stays the one the analyst would see.
        scene = work / (source.name if Path(args.scene).is_file() else f"{args.scene}.tif")
        shutil.copy(source, scene)
        model = ""
        if args.model is not None:  # a fine-tuned model finds its parent through its card's recorded path
            (work / "models").mkdir()
            model = str(shutil.copy(args.model, work / "models" / args.model.name))
        env = {**os.environ, "SLICK_SHOT_SCENE": str(scene), "SLICK_SHOT_OUT": str(args.out.resolve()),
               "SLICK_SHOT_MODEL": model, "SLICK_SHOT_AGAINST_PARENT": "1" if args.against_parent else "",
               "SLICK_SHOT_GIVE_UP_S": str(max(30, args.timeout - 60)),
               "SLICK_MAPPER_MODELS": str(work / "models"), "QT_QPA_PLATFORM": "xcb"}
        command = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN}", "qgis", "--nologo", "--noversioncheck",
                   "--profiles-path", str(profiles), "--profile", "shot", "--code", str(SESSION)]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(command, env=env, timeout=args.timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            sys.exit(f"QGIS did not finish within {args.timeout} s; no screenshot was taken.")
        if done.returncode in (3, 4) and args.out.is_file():
            said = [line for line in done.stdout.splitlines() if line.startswith("screenshot session:")]
            sys.exit(f"{said[-1] if said else 'no result'}; {args.out} shows the window as it was then.")
        if not args.out.is_file() or done.returncode != 0:
            sys.exit(f"QGIS exited with {done.returncode} and no screenshot:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(f"{PLUGIN}: screenshot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
