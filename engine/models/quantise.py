"""int8 static post-training quantisation, kept only where the slick masks stay those of fp32.

Weights per output channel and activations per tensor are quantised to int8 (ONNX Runtime's QDQ format,
which both ONNX Runtime and OpenVINO execute with their int8 kernels), with activation ranges calibrated
on real Sentinel-1 tiles (the bundled Arctic scenes). A segmentation mask can move where fp32 did not:
so the int8 model is compared with PyTorch fp32 when it is made, on other real tiles of the same scenes (the
tiles its ranges came from would flatter it), and kept only when the slick Dice between their masks is at least
0.98. The verdict is ONNX Runtime's: OpenVINO runs the same QDQ graph with its own kernels and can agree less, so
``auto`` compares every runtime's masks again before it chooses one. The verdict is stored beside the int8 file, and a
model that fails is run in fp32, saying so.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..atomic import staged, write_text
from ..machine import utc_now
from .agreement import AGREEMENT, pooled_dice, quantisation_split, slick_mask
from .inference import Forward
from .registry import ModelCard

def quantised_model(onnx_path: Path, card: ModelCard, digest: str, reference: Forward,
                    run: Callable[[Path], Forward]) -> tuple[Optional[Path], str]:
    """(int8 ONNX path or None, the agreement verdict), made once per model hash and remembered; ``run`` builds
    the forward of an ONNX file (ONNX Runtime's, which gives the verdict)."""
    path = onnx_path.with_name(f"{digest}.int8.onnx")
    card_path = onnx_path.with_name(f"{digest}.int8.json")
    if card_path.is_file():
        verdict = json.loads(card_path.read_text())
        if "calibration_tiles" in verdict and (not verdict["passed"] or path.is_file()):  # older verdicts were checked in sample
            return (path if verdict["passed"] else None), verdict["message"]
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    scale = float(card.normalisation.get("input_scale", 1 / 255))
    calibration, tiles = ([t[None, None].astype(np.float32) * scale for t in part] for part in quantisation_split(card))

    class Tiles(CalibrationDataReader):
        def __init__(self) -> None:
            self._left = iter(calibration)

        def get_next(self) -> Optional[dict]:
            tile = next(self._left, None)
            return None if tile is None else {"x": tile}

    with staged(path, "Make the models folder writable, or set SLICK_MAPPER_MODELS.") as tmp:
        quantize_static(str(onnx_path), str(tmp), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    int8 = run(path)
    dice = pooled_dice([slick_mask(reference(t), card) for t in tiles], [slick_mask(int8(t), card) for t in tiles])
    passed = dice >= AGREEMENT
    checked = f"{len(tiles)} real tiles it was not calibrated on"
    message = (f"int8 masks agree with fp32 (slick Dice {dice:.4f} >= {AGREEMENT} on {checked})" if passed else
               f"int8 masks differ from fp32 (slick Dice {dice:.4f} < {AGREEMENT} on {checked}): kept in fp32")
    write_text(card_path, json.dumps({
        "model": card.name, "model_hash": digest, "dice_vs_fp32": round(dice, 5), "threshold": AGREEMENT,
        "tiles": len(tiles), "calibration_tiles": len(calibration), "passed": passed, "message": message,
        "made": utc_now(),
    }, indent=1))
    if not passed:
        path.unlink(missing_ok=True)
    return (path if passed else None), message
