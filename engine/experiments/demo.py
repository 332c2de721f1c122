"""``make demo``: detect slicks on the bundled real Arctic tiles and score them honestly.

For each tile it runs the full detection path with the product's model made without these tiles (its U-Net learnt
the two other labelled Arctic scenes only: the default model learnt from these tiles too), computes slick Dice against the
analyst's label, and puts it beside the Dice of the paper's own predictions on the same tile (computed
here, by the same code). It also draws one PNG: scene, label outline, our prediction. ``--markdown`` writes
the figures as a page that names the command, commit, machine and model hash, so a README figure can be remade.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import rasterio
from PIL import Image, ImageDraw, ImageFilter

from ..atomic import write_bytes, write_text
from ..data.bundled import SAMPLES, SAMPLES_DIR
from ..errors import InputError
from ..jobs.detect import DetectOptions, detect
from ..jobs.evaluate import align_to_grid, read_label_mask, slick_dice
from ..machine import commit_text, cpu_name, file_sha256, utc_now
from ..models import runtimes
from ..models.inference import device_name
from ..models.registry import DEMO_MODEL, read_card, scenes_learnt
from ..progress import Progress


def run_demo(out: Path, options: DetectOptions, progress: Progress) -> dict:
    """``options.model`` None: the product's model made without the demo's tiles (``DEMO_MODEL``). A model that learnt
    from a demo tile is refused before anything is detected, since its score there would be on pixels it was trained on."""
    model = Path(options.model) if options.model else DEMO_MODEL
    seen = sorted(scenes_learnt(model) & set(SAMPLES))
    if seen:
        raise InputError(f"{model.name} learnt from {', '.join(seen)}, which the demo scores: its Dice there would be on pixels it was "
                         "trained on.", f"Run the demo with a model that never saw {', '.join(SAMPLES)} (the default: {DEMO_MODEL.name}).")
    options.model = str(model)
    # Made once per machine before the first tile, as the dock does when a model is chosen: each tile's seconds are then
    # its detection's own (on a 2-core AMD EPYC the first tile's were 19.7 s against 3 s with only the export and the
    # int8 model left to make, up to a minute where the runtime is still to be measured).
    prepared = runtimes.prepare(model, device_name(options.device), options.runtime, progress) if options.fast else None
    rows, panels = [], []
    for name in SAMPLES:
        folder = SAMPLES_DIR / name
        label = folder / "labels_mosaic.png"
        options.prefix, options.overwrite = name, True
        result = detect(folder / "raw_mosaic.tif", out, options, progress)
        ours = slick_dice(result.mask, label)  # the slicks the product shows: its mask, the outlines' pixels
        row = {
            "sample": name,
            "dice_slick_mapper": round(ours.dice, 3),
            "dice_paper_base": round(slick_dice(folder / "pred_base.tif", label).dice, 3),
            "dice_paper_tl": round(slick_dice(folder / "pred_tl.tif", label).dice, 3),
            "slicks": result.n_slicks,
            "seconds": result.seconds,
            "threshold": result.threshold,
            "runtime": result.runtime + (", mirror averaged" if result.mirrored else ""),
        }
        rows.append(row)
        progress.log(
            f"{name}: Dice {row['dice_slick_mapper']:.3f} (paper: base {row['dice_paper_base']:.3f}, "
            f"transfer {row['dice_paper_tl']:.3f}), {result.n_slicks} slicks, {result.seconds:.1f} s"
        )
        panels.append(_panel(folder / "raw_mosaic.tif", label, Path(result.mask), row))
    picture = out / "demo.png"
    _side_by_side(panels).save(picture)
    mean = lambda key: round(float(np.mean([r[key] for r in rows])), 3)  # noqa: E731
    learnt = sorted(scenes_learnt(model))
    return {
        "model": {"file": model.name, "name": read_card(model).name, "sha256": file_sha256(model)},
        "samples": rows,
        "mean_dice_slick_mapper": mean("dice_slick_mapper"),
        "mean_dice_paper_base": mean("dice_paper_base"),
        "mean_dice_paper_tl": mean("dice_paper_tl"),
        "picture": str(picture),
        "prepared": prepared,
        "note": "Neither this model nor the paper's models were trained on these tiles"
                + (f"; this model learnt from the Arctic scenes {', '.join(learnt)} of the five labelled ones" if learnt else "")
                + ". The product's default model learnt from all five (docs/real_data.md), so it is not scored here.",
    }


def demo_page(result: dict, command: str, made_at: str) -> str:
    """The demo's figures as Markdown, with what made them (``made_at``: the commit, taken before the page's
    own picture changed the checkout)."""
    model = result["model"]
    lines = [
        "# Demo: the three real Arctic test tiles",
        "",
        f"Made by `{command}` at commit {made_at} on {cpu_name()}, {utc_now()[:10]}, with "
        f"{model['name']} (`{model['file']}`, sha256 `{model['sha256'][:16]}`), detection with the product's default "
        f"options, in {result['samples'][0]['runtime']}. {result['note']}",
        "",
        "| tile | Slick Mapper | threshold | slicks | paper `pred_base` | paper `pred_tl` |",
        "|---|---|---|---|---|---|",
        *(f"| {r['sample']} | {r['dice_slick_mapper']:.3f} | {r['threshold']:.2f} | {r['slicks']} | {r['dice_paper_base']:.3f} | "
          f"{r['dice_paper_tl']:.3f} |" for r in result["samples"]),
        f"| mean | **{result['mean_dice_slick_mapper']:.3f}** | | | {result['mean_dice_paper_base']:.3f} | {result['mean_dice_paper_tl']:.3f} |",
        "",
        "Slick Dice against the analysts' labels, on the slicks detection keeps (the mask). The paper's are its own "
        "predictions on the same tiles, scored by the same code.",
        "",
        f"![Scene, analyst's label (green) and detected slicks (red)]({Path(result['picture']).name})",
        "",
    ]
    return "\n".join(lines)


def _panel(scene: Path, label_path: Path, mask: Path, row: dict) -> Image.Image:
    """Grey scene, predicted slicks in red, the analyst's label outlined in green."""
    with rasterio.open(scene) as ds:
        grey = ds.read(1)
        transform, crs, shape = ds.transform, ds.crs, ds.shape
    slick = align_to_grid(mask, transform, crs, shape, fill=0) == 1
    label, l_transform, l_crs = read_label_mask(label_path)
    label = align_to_grid(label.astype(np.uint8), transform, crs, shape, src_transform=l_transform, src_crs=l_crs or crs) > 0
    rgb = np.repeat(grey[..., None], 3, axis=2).astype(np.float32)
    rgb[slick] = 0.45 * rgb[slick] + 0.55 * np.array([255, 40, 30])
    outline = np.array(Image.fromarray(label.astype(np.uint8) * 255).filter(ImageFilter.FIND_EDGES)) > 0
    rgb[outline] = [60, 255, 90]
    image = Image.fromarray(rgb.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    text = f"{row['sample']}  Dice {row['dice_slick_mapper']:.2f} (paper TL {row['dice_paper_tl']:.2f})"
    draw.rectangle([0, 0, 8 + 6 * len(text), 16], fill=(0, 0, 0))
    draw.text((4, 3), text, fill=(255, 255, 255))
    return image


def _side_by_side(panels: list[Image.Image]) -> Image.Image:
    height = max(p.height for p in panels)
    canvas = Image.new("RGB", (sum(p.width for p in panels) + 8 * (len(panels) - 1), height), (255, 255, 255))
    x = 0
    for panel in panels:
        canvas.paste(panel, (x, 0))
        x += panel.width + 8
    return canvas


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo")
    p.add_argument("--out", type=Path, default=Path("demo_output"))
    p.add_argument("--model", help=f"model file, one that never saw {', '.join(SAMPLES)} (default: {DEMO_MODEL.name})")
    p.add_argument("--threshold", type=float, help="default: the model's own")
    p.add_argument("--device", default="auto")
    p.add_argument("--runtime", choices=runtimes.RUNTIME_CHOICES, default=runtimes.default_runtime(),
                   help="as detect takes it: a CPU's int8 kernels can keep a small slick its fp32 drops")
    p.add_argument("--markdown", type=Path, help="also write the figures as a page here (e.g. docs/demo.md), its picture beside it")
    p.set_defaults(func=_run_cli)


def _run_cli(args: argparse.Namespace, progress: Progress) -> dict:
    options = DetectOptions(model=args.model, threshold=args.threshold, device=args.device, runtime=args.runtime)
    made_at = commit_text()
    result = run_demo(args.out, options, progress)
    if args.markdown:
        picture = args.markdown.with_suffix(".png")
        write_bytes(picture, Path(result["picture"]).read_bytes())
        write_text(args.markdown, demo_page({**result, "picture": str(picture)}, args.invocation, made_at))
    return result
