"""A screenshot of desktop QGIS with Slick Mapper after a detection, as an analyst sees it.

    .venv/bin/python tools/desktop_screenshot.py [--out docs/qgis_desktop.png] [--scene SAMPLE]

It runs the real application (Debian's ``qgis``, on a virtual screen from ``xvfb-run``) in a throw-away
profile with the plugin linked from this checkout (tools/qgis_dev.py), and hands QGIS a ``--code`` script
that waits for the plugin to be loaded, adds a copy of a bundled Arctic tile, opens the dock, presses
**Detect slicks** and, once the result group is drawn, grabs the main window. Nothing in the checkout or
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
    parser.add_argument("--scene", default="sample_1", help="bundled Arctic sample (default sample_1)")
    parser.add_argument("--timeout", type=int, default=300, help="seconds before QGIS is stopped (default 300)")
    args = parser.parse_args()
    for tool in ("qgis", "xvfb-run"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed: `make qgis` installs desktop QGIS; xvfb comes with `make venv`.")
    with tempfile.TemporaryDirectory(prefix="slick-shot-") as tmp:
        work = Path(tmp)
        profiles = work / "profiles"
        profile = profile_folder(profiles, "shot")
        link_plugin(profile / "python" / "plugins")
        enable_plugin(profile)
        scene = work / f"{args.scene}.tif"
        shutil.copy(SAMPLES / args.scene / "raw_mosaic.tif", scene)
        env = {**os.environ, "SLICK_SHOT_SCENE": str(scene), "SLICK_SHOT_OUT": str(args.out.resolve()),
               "SLICK_MAPPER_MODELS": str(work / "models"), "QT_QPA_PLATFORM": "xcb"}
        command = ["xvfb-run", "-a", "-s", f"-screen 0 {SCREEN}", "qgis", "--nologo", "--noversioncheck",
                   "--profiles-path", str(profiles), "--profile", "shot", "--code", str(SESSION)]
        args.out.parent.mkdir(parents=True, exist_ok=True)
        try:
            done = subprocess.run(command, env=env, timeout=args.timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            sys.exit(f"QGIS did not finish within {args.timeout} s; no screenshot was taken.")
        if not args.out.is_file() or done.returncode != 0:
            sys.exit(f"QGIS exited with {done.returncode} and no screenshot:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    print(f"{PLUGIN}: screenshot written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
