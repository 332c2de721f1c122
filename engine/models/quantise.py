"""int8 static post-training quantisation, kept only where the slick masks stay those of fp32.

Each CPU runtime gets the int8 model its own kernels were built for, with activation ranges calibrated on real
Sentinel-1 tiles (the bundled Arctic scenes):

- ONNX Runtime: its QDQ format (``quantize_static``), weights per output channel, activations per tensor.
- OpenVINO: NNCF's quantisation of the OpenVINO network, saved as OpenVINO IR, with the convolutions at the
  network's edges kept in float (``edge_convolutions``) and a one-channel head split in two (``split_heads``).
  OpenVINO runs the QDQ graph too, but with its own kernels, and on the bundled U-Net its masks agreed with fp32 at
  0.72 where ONNX Runtime's agreed at 0.985.

A segmentation mask can move where fp32 did not, so every int8 model is compared with PyTorch fp32 when it is made,
on other real tiles of the same scenes (the tiles its ranges came from would flatter it), and kept only when the
slick Dice between their masks is at least 0.98. The verdict is stored beside the int8 file, and a model that fails
is run in fp32, saying so; ``auto`` compares every runtime's masks again before it chooses one.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import numpy as np

from ..atomic import staged, staged_folder, write_text
from ..machine import utc_now
from .agreement import AGREEMENT, pooled_dice, quantisation_split, slick_mask
from .inference import Forward
from .registry import ModelCard

if TYPE_CHECKING:
    import openvino

WRITABLE = "Make the models folder writable, or set SLICK_MAPPER_MODELS."
OPENVINO_INT8_FORMAT = 2
"""How OpenVINO's int8 model is made (2: with ``split_heads``); a model and verdict of another format are made again."""


def int8_files(onnx_path: Path, digest: str, runtime: str) -> tuple[Path, Path, int]:
    """``runtime``'s int8 model file beside the export, the file of its agreement verdict, and the version of how it is
    made."""
    if runtime == "openvino":
        return onnx_path.with_name(f"{digest}.ov-int8.xml"), onnx_path.with_name(f"{digest}.ov-int8.json"), OPENVINO_INT8_FORMAT
    path = onnx_path.with_name(f"{digest}.int8.onnx")
    return path, path.with_suffix(".json"), 1


def kept_verdict(onnx_path: Path, digest: str, runtime: str) -> Optional[dict]:
    """The stored verdict on ``runtime``'s int8 model when it still stands (made the current way, and its model still
    there if it passed); None when the model is still to be made and checked."""
    path, verdict_path, version = int8_files(onnx_path, digest, runtime)
    try:
        verdict = json.loads(verdict_path.read_text())
    except (OSError, ValueError):
        return None
    current = "calibration_tiles" in verdict and verdict.get("format", 1) == version  # older verdicts were checked in sample
    return verdict if current and (not verdict["passed"] or path.is_file()) else None


def quantised_model(onnx_path: Path, card: ModelCard, digest: str, reference: Forward,
                    run: Callable[[Path], Forward]) -> tuple[Optional[Path], str]:
    """(ONNX Runtime's int8 QDQ model or None, the agreement verdict), made once per model hash and remembered;
    ``run`` builds ONNX Runtime's forward of an ONNX file."""
    path = int8_files(onnx_path, digest, "onnxruntime")[0]

    def make(calibration: list[np.ndarray]) -> None:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

        class Tiles(CalibrationDataReader):
            def __init__(self) -> None:
                self._left = iter(calibration)

            def get_next(self) -> Optional[dict]:
                tile = next(self._left, None)
                return None if tile is None else {"x": tile}

        with staged(path, WRITABLE) as tmp:
            quantize_static(str(onnx_path), str(tmp), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)

    return _checked(onnx_path, digest, "onnxruntime", card, reference, run, make)


def openvino_int8(onnx_path: Path, card: ModelCard, digest: str, reference: Forward,
                  run: Callable[[Path], Forward]) -> tuple[Optional[Path], str]:
    """(OpenVINO's int8 model, quantised by NNCF with the edge convolutions kept in float, or None; the agreement
    verdict), made once per model hash and remembered; ``run`` builds OpenVINO's forward of an IR file."""
    path = int8_files(onnx_path, digest, "openvino")[0]

    def make(calibration: list[np.ndarray]) -> None:
        import openvino as ov

        quantised = openvino_int8_network(onnx_path, calibration)
        with staged_folder(path.parent, hint=WRITABLE) as stage:
            ov.save_model(quantised, str(stage / path.name), compress_to_fp16=False)  # the float layers as checked

    return _checked(onnx_path, digest, "openvino", card, reference, run, make)


def openvino_int8_network(onnx_path: Path, calibration: list[np.ndarray], split: bool = True) -> openvino.Model:
    """The ONNX export quantised by NNCF on the calibration tiles, its edge convolutions in float; with ``split``
    (as the product makes it), its one-channel heads split first (``split_heads``). Unchecked: ``openvino_int8``
    checks it."""
    import nncf
    import openvino as ov

    network = ov.Core().read_model(str(onnx_path))
    depthwise = split_heads(network) if split else []
    network.reshape({"x": list(calibration[0].shape)})
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()):  # its progress bars: the engine's stdout carries JSON lines
        return nncf.quantize(network, nncf.Dataset(calibration), subset_size=len(calibration),
                             ignored_scope=nncf.IgnoredScope(names=edge_convolutions(network) + depthwise))


def split_heads(network: openvino.Model) -> list[str]:
    """Each convolution wider than 1x1 with one output channel and several in (a segmentation head) made a
    depthwise convolution and a 1x1 convolution that sums its channels: the same products, added in another order.
    OpenVINO's CPU kernels vectorise across output channels, and ran the bundled U-Net's one-channel 3x3 head (16
    channels in) at a sixteenth of their width: 5.1 ms of a 45-ms int8 pass over a 512-px tile, 2.8 ms split, the whole
    pass 1.05-1.06 times as fast with the same masks (2-core Intel Xeon, CPU model 207; benchmarks/head_split_bench.py). In
    fp32 OpenVINO the split gained nothing (measured), so only the int8 model is made from it. Returns the depthwise
    convolutions' names: with the 1x1 sum, an edge convolution, they keep the head in float."""
    import openvino.opset13 as ops

    made = []
    for conv in network.get_ordered_ops():
        weights = conv.input_value(1).get_node() if conv.get_type_name() == "Convolution" else None
        if weights is None or weights.get_type_name() != "Constant":
            continue
        w = weights.get_data()
        if w.shape[0] != 1 or w.shape[1] == 1 or w.shape[2:] == (1, 1):  # a 1x1 one is a dot product already
            continue
        a = conv.get_attributes()
        depthwise = ops.group_convolution(conv.input_value(0), ops.constant(w.reshape(w.shape[1], 1, 1, *w.shape[2:])),
                                          a["strides"], a["pads_begin"], a["pads_end"], a["dilations"], a["auto_pad"])
        summed = ops.convolution(depthwise, ops.constant(np.ones((1, w.shape[1], 1, 1), w.dtype)), [1, 1], [0, 0], [0, 0], [1, 1])
        name = conv.get_friendly_name()
        depthwise.set_friendly_name(f"{name}/depthwise")
        summed.set_friendly_name(f"{name}/sum")
        conv.output(0).replace(summed.output(0))
        made.append(depthwise.get_friendly_name())
    if made:
        network.validate_nodes_and_infer_types()
    return made


def edge_convolutions(network: openvino.Model) -> list[str]:
    """The convolutions that read the input with no convolution before them, and those whose output reaches a result
    with none after them: the first reads the backscatter's whole range, the last makes the logits the threshold cuts,
    and int8 in either moved the bundled U-Net's masks (the usual practice of keeping a network's first and last layers
    in float). Each member of an ensemble has its own."""

    def reaches(op: openvino.Node, kind: str, step: Callable[[openvino.Node], list]) -> bool:
        seen, left = set(), step(op)
        while left:
            node = left.pop()
            if node.get_type_name() == kind:
                return True
            if node.get_type_name() not in ("Convolution", "ShapeOf") and node.get_friendly_name() not in seen:  # shapes carry no values
                seen.add(node.get_friendly_name())
                left += step(node)
        return False

    def upstream(op: openvino.Node) -> list:
        return [i.get_source_output().get_node() for i in op.inputs()]

    def downstream(op: openvino.Node) -> list:
        return [t.get_node() for o in op.outputs() for t in o.get_target_inputs()]

    return [op.get_friendly_name() for op in network.get_ordered_ops() if op.get_type_name() == "Convolution"
            and (reaches(op, "Parameter", upstream) or reaches(op, "Result", downstream))]


def quantisation_inputs(card: ModelCard) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """(the model inputs int8 is calibrated on, those its masks are checked on): ``quantisation_split``'s real tiles
    scaled as the runtimes are fed, one (1, 1, H, W) array each."""
    scale = float(card.normalisation.get("input_scale", 1 / 255))
    calibration, checked = ([t[None, None].astype(np.float32) * scale for t in part] for part in quantisation_split(card))
    return calibration, checked


def _checked(onnx_path: Path, digest: str, runtime: str, card: ModelCard, reference: Forward,
             run: Callable[[Path], Forward], make: Callable[[list[np.ndarray]], None]) -> tuple[Optional[Path], str]:
    """``make`` writes ``runtime``'s int8 model (``int8_files``) from the calibration tiles; it is kept if its masks
    agree with ``reference``'s on the other tiles. The verdict is remembered beside it, so that each model is quantised
    once by each version of how it is made (verdicts written before versions were kept are version 1)."""
    path, verdict_path, version = int8_files(onnx_path, digest, runtime)
    verdict = kept_verdict(onnx_path, digest, runtime)
    if verdict is not None:
        return (path if verdict["passed"] else None), verdict["message"]
    calibration, tiles = quantisation_inputs(card)
    make(calibration)
    int8 = run(path)
    dice = pooled_dice([slick_mask(reference(t), card) for t in tiles], [slick_mask(int8(t), card) for t in tiles])
    passed = dice >= AGREEMENT
    checked = f"{len(tiles)} real tiles it was not calibrated on"
    message = (f"int8 masks agree with fp32 (slick Dice {dice:.4f} >= {AGREEMENT} on {checked})" if passed else
               f"int8 masks differ from fp32 (slick Dice {dice:.4f} < {AGREEMENT} on {checked}): kept in fp32")
    write_text(verdict_path, json.dumps({
        "model": card.name, "model_hash": digest, "dice_vs_fp32": round(dice, 5), "threshold": AGREEMENT,
        "tiles": len(tiles), "calibration_tiles": len(calibration), "passed": passed, "message": message,
        "format": version, "made": utc_now(),
    }, indent=1))
    if not passed:
        path.unlink(missing_ok=True)
        if path.suffix == ".xml":  # OpenVINO IR keeps its weights beside the network
            path.with_suffix(".bin").unlink(missing_ok=True)
    return (path if passed else None), message
