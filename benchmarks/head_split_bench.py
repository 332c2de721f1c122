"""OpenVINO's int8 model of the bundled network made with its one-channel head split (``quantise.split_heads``, as the
product makes it) and without, timed in turns on the same real tiles, each one's masks against PyTorch fp32.

    .venv/bin/python benchmarks/head_split_bench.py --markdown docs/benchmarks_xeon207_head_split.md

Both are quantised from the same export on the same calibration tiles and compiled as detection compiles them (one
tile at a time, all of its threads); each round times every held tile once in each, the two in turn, so the machine's
drift biases both alike, and the one timed first alternates. Results go to ``--json`` with the commit and the model's sha256.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import report  # noqa: E402
from engine.machine import commit_text, file_sha256  # noqa: E402
from engine.models import agreement, runtimes  # noqa: E402
from engine.models.eager import EagerForward  # noqa: E402
from engine.models.quantise import openvino_int8_network, quantisation_inputs  # noqa: E402
from engine.models.registry import LIGHT_MODEL, load_model  # noqa: E402

VARIANTS = {"head split (the product's)": True, "head as exported": False}


def run(model_path: Path, rounds: int) -> dict:
    import openvino as ov

    model, card = load_model(model_path, "cpu")
    factory = runtimes.Factory(model_path, card, torch.device("cpu"), model)
    calibration, held = quantisation_inputs(card)
    config = runtimes.openvino_config("int8", factory.threads)
    compiled = {name: ov.Core().compile_model(openvino_int8_network(factory.onnx(), calibration, split), "CPU", config)
                for name, split in VARIANTS.items()}
    reference = EagerForward(model, torch.device("cpu"), None)
    fp32 = [agreement.slick_mask(reference(t), card) for t in held]
    dice = {name: agreement.pooled_dice(fp32, [agreement.slick_mask(net(t)[0], card) for t in held]) for name, net in compiled.items()}
    seconds: dict[str, list[float]] = {name: [] for name in compiled}
    for net in compiled.values():
        net(held[0])  # first call: memory set up, not timed
    for i in range(rounds):
        for name, net in list(compiled.items())[:: 1 if i % 2 == 0 else -1]:  # A B, then B A
            for t in held:
                start = time.perf_counter()
                net(t)
                seconds[name].append(time.perf_counter() - start)
    median = {name: statistics.median(s) for name, s in seconds.items()}
    names = list(VARIANTS)
    return {"model": card.name, "model_sha256": file_sha256(model_path), "tile": card.tile_size, "tiles": len(held),
            "rounds": rounds, "median_s": median, "dice_vs_fp32": dice, "speed_up": median[names[1]] / median[names[0]]}


def page(results: dict, command: str) -> str:
    m, r = results["machine"], results["figures"]
    rows = "\n".join(f"| {name} | {1000 * r['median_s'][name]:.1f} | {r['dice_vs_fp32'][name]:.4f} |" for name in VARIANTS)
    return f"""# OpenVINO int8: the one-channel head split in two

Made by `{command}` at commit `{results['commit']}` on a {m['cores']}-core {m['cpu']} CPU ({m['torch_threads']} threads), load
average {m['loadavg_start'][0]} at the start and {m['loadavg_end'][0]} at the end. {r['model']} (sha256 `{r['model_sha256'][:16]}`),
{r['tiles']} real {r['tile']}-px tiles the int8 models were not calibrated on, {r['rounds']} rounds, the two models in turn.

| int8 model | median ms a tile | masks' slick Dice against PyTorch fp32 |
|---|---|---|
{rows}

The split model runs a tile **{r['speed_up']:.3f}** times as fast. Its one-channel head is a depthwise convolution and a
1x1 sum of its channels: the same products added in another order, which OpenVINO's CPU kernels, vectorised across
output channels, run at their full width.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=LIGHT_MODEL)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", type=Path, default=ROOT / "bench_output" / "head_split_bench.json")
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args()
    command = "python benchmarks/head_split_bench.py " + " ".join(sys.argv[1:])
    results = {"machine": report.machine(), "commit": commit_text(), "figures": run(args.model, args.rounds)}
    report.finish(results, args.json)
    print(page(results, command))
    if args.markdown:
        args.markdown.write_text(page(results, command))


if __name__ == "__main__":
    main()
