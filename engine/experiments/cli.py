"""Experiments of the transfer-learning paper, run on the bundled real Arctic tiles.

``python -m engine experiment loso``: leave one scene out, for each of the three demo tiles
(``engine/experiments/loso.py``).

``python -m engine experiment transfer``: base vs fine-tuned-from-source models for N target tiles, the
paper's Fig. 2 and Table II (``engine/experiments/transfer.py``).

``python -m engine experiment benchmark``: every candidate model trained on all but one real labelled scene,
scored on it (``engine/experiments/benchmark.py``); the protocol design choices are made on.

``python -m engine experiment dakter``: DAKTer's generators and students on the same split
(``engine/experiments/dakter_eval.py``).

``python -m engine experiment dakd``: the DAKD paper's measurements at CPU scale: DAKTer and SAR-JointNet samples,
their students, the amount, label and CAFT ablations (``engine/experiments/dakd_eval.py``).

``python -m engine experiment within-scene``: label half of each tile, fine-tune, score the other half and the
other tiles (``engine/experiments/within_scene.py``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..atomic import write_text
from ..cli.args import DEVICE_HELP, add_options, options_from
from ..jobs.finetune import FinetuneOptions
from ..models.registry import HELD_OUT_MODEL
from ..models.training import TRAIN_LAYERS
from ..progress import Progress
from . import benchmark, dakd_eval, dakter_eval, transfer, within_scene
from .loso import leave_one_scene_out, page as loso_page


LOSO_RECIPE = FinetuneOptions()
"""The product's own fine-tuning recipe: what an analyst's labels on other scenes would do to a new one."""


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("experiment")
    sub = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    q = sub.add_parser("loso", help="leave one scene out: fine-tune on the others' labels, score on the one left out")
    q.add_argument("--out", type=Path, default=Path("experiment_output/loso"), help="empty or new folder")
    q.add_argument("--base", type=Path, default=HELD_OUT_MODEL, help="model to fine-tune (default: the held-out model, which never saw sample_1, sample_2, sample_123)")
    q.add_argument("--threshold", type=float, help="default: each model's own")
    q.add_argument("--markdown", type=Path, help="also write the report page here (e.g. docs/loso_finetune.md)")
    add_options(q, LOSO_RECIPE, {"tile": "tile size in pixels", "epochs": "most epochs per run",
                                 "train_layers": "all or decoder", "device": DEVICE_HELP, "seed": "seed of the tile split and training"},
                train_layers={"choices": TRAIN_LAYERS})
    q.set_defaults(func=_run_loso)
    transfer.add_cli(sub)
    dakter_eval.add_cli(sub)
    dakd_eval.add_cli(sub)
    benchmark.add_cli(sub)
    within_scene.add_cli(sub)


def _run_loso(args: argparse.Namespace, progress: Progress) -> dict:
    result = leave_one_scene_out(args.base, args.out, options_from(args, LOSO_RECIPE), args.threshold, progress, args.invocation)
    if args.markdown:
        write_text(args.markdown, loso_page(result))
    return result
