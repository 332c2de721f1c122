"""The command line of the tools that read one candidate's rows of an ``engine experiment benchmark`` run and write a page."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from engine.atomic import write_text  # noqa: E402
from engine.experiments.benchmark import seed_suffix  # noqa: E402


def candidate_rows(run: Path, candidate: str) -> list[dict]:
    """The rows of ``candidate`` in the run's ``benchmark.csv``; a run without any stops the tool, naming the file."""
    with open(run / "benchmark.csv", newline="") as rows:
        chosen = [row for row in csv.DictReader(rows) if row["candidate"] == candidate]
    if not chosen:
        raise SystemExit(f"{run / 'benchmark.csv'} has no rows of {candidate}.")
    return chosen


def detection(run: Path, row: dict, kind: str) -> Path:
    """The held-out scene's ``kind`` raster (``mask`` or ``probability``) that the run's ``row`` was scored on, by the
    benchmark's names for each seed's detections."""
    return run / "detections" / f"{row['scene']}_{row['candidate']}{seed_suffix(int(row.get('seed') or 0))}_{kind}.tif"


def main(doc: str, analyse: Callable[[Path, str], list[dict]], page: Callable[[list[dict], str], str]) -> int:
    """``analyse(run folder, candidate)`` gives the rows, ``page(rows, command)`` the page, printed and, with
    ``--markdown``, written, so the page names the command that made it."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("run", type=Path, help="an `engine experiment benchmark` output folder")
    p.add_argument("--candidate", required=True)
    p.add_argument("--markdown", type=Path, help="write the table here too")
    args = p.parse_args()
    text = page(analyse(args.run, args.candidate), " ".join(["python", *sys.argv]))
    print(text)
    if args.markdown:
        write_text(args.markdown, text)
    return 0
