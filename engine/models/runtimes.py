"""Runtimes behind one ``Predictor``: the fastest this machine has for this model, masks unchanged.

The same network runs several times faster or slower depending on who executes it: PyTorch eager, PyTorch's
TorchScript with frozen weights (conv and batch-norm folded), ONNX Runtime, or OpenVINO, each from an ONNX
export of the model file, in fp32, in bf16 where the CPU has native bf16 units (AVX-512 BF16, AMX), or in
int8 (static post-training quantisation, ``quantise``). Which one wins depends on the CPU and the network,
so ``auto`` measures: a short calibration on real tiles, once per machine (CPU model string) and network (its
layers and their shapes, ``network_signature``), cached in the user's cache folder. A candidate whose slick masks do
not agree with PyTorch fp32 (Dice < 0.98 on two real tiles no int8 model was calibrated on) is never chosen, however
fast.

Exports live beside the user's models (``<models>/.exports/<hash>.onnx``), never in the bundled resources.
On a GPU the PyTorch path is used (ONNX Runtime and OpenVINO are installed here for CPUs only).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import sys
import time
import warnings
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, NamedTuple, Optional

import numpy as np

from ..atomic import staged, write_text
from ..cache import cache_dir
from ..errors import ModelError, OutputError, ResourceError
from ..locks import waited_for
from ..progress import Progress, silent
from . import cpu_features
from .agreement import AGREEMENT, choice_tiles, pooled_dice, slick_mask
from .inference import Forward, Predictor
from .registry import ModelCard, load_model, read_card, user_models_dir

if TYPE_CHECKING:
    import torch

RUNTIMES = ("torch", "torchscript", "onnxruntime", "openvino")
AUTO = "auto"
RUNTIME_CHOICES = (AUTO, *RUNTIMES, "torch fp32", "torch bf16", "torchscript fp32", "onnxruntime fp32", "onnxruntime int8",
                   "openvino fp32", "openvino bf16", "openvino int8")
"""What ``--runtime`` accepts: auto, a runtime in its usual precision, or a runtime with a precision it has."""
INSTALL = {
    "onnx": "pip install onnx==1.23.2",
    "onnxruntime": "pip install onnxruntime==1.32.0",
    "openvino": "pip install openvino==2026.4.1",
    "nncf": "pip install nncf==3.4.0",
}
GPU_CHOICE_TILES = 32
"""Tiles per timed call of the runtime choice on a GPU: a full batch, as detection runs it."""

CHOICE_FORMAT = "int8 2"
"""Part of the key a measured choice is kept under, changed when what a candidate runs changes (``int8 2``: OpenVINO's
int8 became its own model, NNCF's), so that a choice measured before is measured again rather than kept for good."""
CALIBRATION_ROUNDS = 3
"""Rounds of the runtime choice, each candidate timed by its best: a pause of the machine only ever slows a round,
and the choice is cached per machine and network. With one round, a benchmark run on the 2-core AMD EPYC once
chose PyTorch bf16, which three other calibrations there timed at 0.07 s a tile against OpenVINO bf16's 0.04 s."""


@dataclass(frozen=True)
class Candidate:
    runtime: str
    precision: str  # fp32, bf16 or int8

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"


# --- files: hash, exports, caches -----------------------------------------------------------------


def model_hash(path: str | Path) -> str:
    """The model file's sha256 (16 hex digits), read once per version of the file in a process: a detection asks it
    whether the model is ready and again to build its runtime (the bundled model is 38 MB)."""
    stat = os.stat(path)
    return _file_hash(str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _file_hash(path: str, mtime_ns: int, size: int) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()[:16]


def network_signature(path: str | Path, card: ModelCard) -> str:
    """What a runtime's speed depends on: the network's layers and their shapes, never its weights' values.

    A fine-tuned model shares its parent's, so its first detection takes the runtime measured for the parent instead
    of building and timing every candidate again: on a 2-core Ice Lake Xeon that choice was 16-19 s of a 56-59-s
    fine-tuning loop, most of it making two int8 models only one of which runs. Its own export, and its own int8 model and its
    agreement check where int8 is the choice, are still made."""
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        shapes = sorted((name, list(f.get_slice(name).get_shape())) for name in f.keys())
    network = [card.architecture, card.encoder, card.in_channels, card.out_channels, card.arch_kwargs, shapes]
    return hashlib.sha256(json.dumps(network, sort_keys=True, default=str).encode()).hexdigest()[:16]


def exports_dir() -> Path:
    return user_models_dir() / ".exports"


def cache_file() -> Path:
    return cache_dir() / "runtime_choice.json"


def onnx_path(digest: str) -> Path:
    return exports_dir() / f"{digest}.onnx"


def export_onnx(model: "torch.nn.Module", card: ModelCard, digest: str) -> Path:
    """The model as ONNX (opset 17, batch and tile size free), exported once per model hash."""
    import torch

    path = onnx_path(digest)
    if path.is_file():
        return path
    _require("onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    example = torch.zeros(1, card.in_channels, card.tile_size, card.tile_size)
    try:
        with staged(path, "Make the models folder writable, or set SLICK_MAPPER_MODELS.") as tmp, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model.float().cpu().eval(), example, str(tmp), dynamo=False, opset_version=17,
                input_names=["x"], output_names=["logits"],
                dynamic_axes={"x": {0: "batch", 2: "height", 3: "width"}, "logits": {0: "batch", 2: "height", 3: "width"}},
            )
    except Exception as exc:  # noqa: BLE001 - any exporter failure means: this model has no ONNX form
        raise ModelError(f"The model {card.name} does not export to ONNX ({type(exc).__name__}: {str(exc)[:200]}).",
                         "It runs with PyTorch instead; choose --runtime torch to skip the attempt.") from exc
    return path


def _require(package: str) -> None:
    """Refuse a runtime that is not installed, without importing it: NNCF imports PyTorch (3 s on this project's
    2-core CPU), which a detection whose int8 model already exists never needs."""
    if not _installed(package):
        raise ResourceError(f"The {package} runtime is not installed in the engine's Python.",
                            f"Install it with `{INSTALL[package]}`, or choose another --runtime.")


# --- one forward function per runtime -------------------------------------------------------------


def torchscript_forward(model: "torch.nn.Module", card: ModelCard, device: str) -> Forward:
    """Trace and freeze (weights become constants, conv and batch-norm fold); fp32 only."""
    import torch

    from .eager import EagerForward

    example = torch.zeros(1, card.in_channels, card.tile_size, card.tile_size, device=device).to(memory_format=torch.channels_last)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            frozen = torch.jit.freeze(torch.jit.trace(model.to(device).eval().to(memory_format=torch.channels_last), example, check_trace=False))
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: this model has no TorchScript form
        raise ModelError(f"The model {card.name} does not trace to TorchScript ({type(exc).__name__}: {str(exc)[:200]}).",
                         "It runs with PyTorch eager instead.") from exc
    return EagerForward(frozen, device, None)


def onnxruntime_forward(onnx_path: Path, threads: int) -> Forward:
    _require("onnxruntime")
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])

    def run(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"x": np.ascontiguousarray(x, dtype=np.float32)})[0]

    return run


def openvino_cache(onnx_path: Path) -> Path:
    return onnx_path.parent / "openvino_cache"


def openvino_config(precision: str, threads: int) -> dict:
    """How detection compiles a network with OpenVINO: the precision, all of its threads, one tile at a time."""
    return {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32", "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY"}


def openvino_forward(onnx_path: Path, precision: str, threads: int) -> Forward:
    """Compiled per input shape (static shapes run faster than a dynamic model in OpenVINO); the compiled network
    is cached beside the export (OpenVINO's model cache), so a run after the first loads it instead of compiling
    it again (about half the time, measured)."""
    _require("openvino")
    import openvino as ov

    core = ov.Core()
    try:
        core.set_property({"CACHE_DIR": str(openvino_cache(onnx_path))})
    except RuntimeError:
        pass  # a cache folder that cannot be made: every run compiles, as it would without the cache
    model = core.read_model(str(onnx_path))
    config = openvino_config(precision, threads)
    compiled: dict[tuple, object] = {}

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape not in compiled:
            shaped = model.clone()
            shaped.reshape({"x": list(x.shape)})
            compiled[x.shape] = core.compile_model(shaped, "CPU", config)
        return compiled[x.shape](np.ascontiguousarray(x, dtype=np.float32))[0]

    return run


# --- choosing -----------------------------------------------------------------------------------


def candidates(device: "torch.device | str") -> list[Candidate]:
    """What can run here: bf16 only where the CPU has it natively, ONNX runtimes only where installed."""
    device = str(device)
    if not _on_cpu(device):
        from .eager import fast_dtype

        return [Candidate("torch", "fp32")] + ([Candidate("torch", "bf16")] if fast_dtype(device) else [])
    native_bf16 = cpu_features.native_bf16()
    found = [Candidate("torch", "fp32"), Candidate("torchscript", "fp32")]
    if native_bf16:
        found.append(Candidate("torch", "bf16"))
    for runtime in ("onnxruntime", "openvino"):
        if _installed(runtime) and _installed("onnx"):
            found.append(Candidate(runtime, "fp32"))
            if runtime == "onnxruntime" or _installed("nncf"):  # OpenVINO's int8 is NNCF's (``quantise``)
                found.append(Candidate(runtime, "int8"))
            if runtime == "openvino" and native_bf16:
                found.append(Candidate(runtime, "bf16"))
    return found


def _on_cpu(device: str) -> bool:
    return device.split(":")[0] == "cpu"


def _torch_precision(device: str) -> str:
    """PyTorch's fastest precision on ``device``."""
    from .eager import fast_dtype

    return "bf16" if fast_dtype(device) else "fp32"


def inference_threads() -> int:
    """Threads a runtime runs the network on: PyTorch's count where PyTorch is loaded (set by whoever runs
    networks in it too), else OMP_NUM_THREADS (``limit_threads``), else 0: each runtime's own default, the
    physical cores, as PyTorch's is."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.get_num_threads()
    return int(os.environ.get("OMP_NUM_THREADS") or 0)


def limit_threads(n: int) -> None:
    """Run this process's networks on ``n`` threads, whichever runtime runs them: the runtimes read it through
    ``inference_threads``, and PyTorch, where it is loaded now or later, takes it too (it reads OMP_NUM_THREADS
    when imported)."""
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def _installed(package: str) -> bool:
    """Whether ``package`` is there, without importing it (NNCF imports PyTorch, seconds)."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


class Factory:
    """Builds any candidate for one model file, sharing its export and its int8 model between them.

    The PyTorch network is loaded only when something needs it (PyTorch or TorchScript runs it, or an export
    or an agreement check is still to be made): a runtime whose export exists starts without it."""

    def __init__(self, model_path: Path, card: ModelCard, device: "torch.device | str",
                 model: Optional["torch.nn.Module"] = None) -> None:
        self.model_path, self.card, self.device = model_path, card, str(device)
        self._model = model
        self.digest = model_hash(model_path)
        self.threads = inference_threads()
        self._onnx: Optional[Path] = None
        self._int8: dict[str, tuple[Optional[Path], str]] = {}

    @property
    def model(self) -> "torch.nn.Module":
        if self._model is None:
            self._model = load_model(self.model_path, self.device)[0]
        return self._model

    def onnx(self) -> Path:
        if self._onnx is None:
            path = onnx_path(self.digest)
            self._onnx = path if path.is_file() else export_onnx(self.model, self.card, self.digest)
        return self._onnx

    def int8(self, runtime: str) -> tuple[Optional[Path], str]:
        """``runtime``'s int8 model when its masks agree with fp32's, else None; and what the check found."""
        if runtime not in self._int8:
            from .quantise import openvino_int8, quantised_model

            if runtime == "openvino":
                _require("nncf")
                made = openvino_int8(self.onnx(), self.card, self.digest, self.reference(),
                                     lambda path: openvino_forward(path, "int8", self.threads))
            else:
                _require("onnxruntime")
                made = quantised_model(self.onnx(), self.card, self.digest, self.reference(), lambda path: onnxruntime_forward(path, 0))
            self._int8[runtime] = made
        return self._int8[runtime]

    def reference(self) -> Forward:
        """PyTorch fp32, what every candidate is checked against; PyTorch and the network are loaded at its first
        call, which an int8 model whose verdict is stored never makes."""

        def forward(x: np.ndarray) -> np.ndarray:
            from .eager import EagerForward

            return EagerForward(self.model, self.device, None)(x)

        return forward

    def build(self, candidate: Candidate) -> Forward:
        runtime, precision = candidate.runtime, candidate.precision
        if runtime == "torch":
            from .eager import EagerForward, fast_dtype

            return EagerForward(self.model, self.device, fast_dtype(self.device) if precision == "bf16" else None)
        if runtime == "torchscript":
            return torchscript_forward(self.model, self.card, self.device)
        if not _on_cpu(self.device):
            raise ResourceError(f"{runtime} runs on the CPU here.", "Use --device cpu, or --runtime torch on the GPU.")
        if precision == "int8":
            path, verdict = self.int8(runtime)
            if path is None:
                raise ModelError(f"int8 is refused for {self.card.name}: {verdict}.", "Detection uses another precision.")
        else:
            path = self.onnx()
        if runtime == "onnxruntime":
            return onnxruntime_forward(path, self.threads)
        return openvino_forward(path, precision, self.threads)


def forced(runtime: str, device: "torch.device | str") -> Candidate:
    """The candidate an analyst names: a runtime in its usual precision, or a runtime with its precision (``openvino
    bf16``), which must be one this machine runs."""
    name, _, precision = runtime.partition(" ")
    if not precision:
        return Candidate(name, _torch_precision(str(device)) if name == "torch" else "fp32")
    here = candidates(device)
    if Candidate(name, precision) not in here:
        raise ResourceError(f"{runtime} does not run on this machine (a precision its CPU lacks natively, or a runtime not installed).",
                            f"Choose auto or one of {', '.join(c.label for c in here)}.")
    return Candidate(name, precision)


def default_runtime() -> str:
    """``$SLICK_MAPPER_RUNTIME``, else auto: the runtime every command runs unless told."""
    return os.environ.get("SLICK_MAPPER_RUNTIME", AUTO)


def make_predictor(model_path: str | Path, device: "torch.device | str", runtime: str = AUTO, *,
                   progress: Optional[Progress] = None) -> tuple[Predictor, list[str]]:
    """A Predictor on ``runtime`` (or the one ``auto`` measured fastest here), and notes for the analyst."""
    progress = progress or silent()
    if runtime not in RUNTIME_CHOICES:
        raise ModelError(f"Unknown runtime {runtime!r}.", f"Use auto, a runtime ({', '.join(RUNTIMES)}) or one with its precision, "
                                                          f"e.g. openvino bf16.")
    model_path = Path(model_path)
    card = read_card(model_path)
    factory = Factory(model_path, card, device)
    device = factory.device
    notes: list[str] = []
    with ExitStack() as held:
        if readiness(model_path, device, runtime).left:
            held.enter_context(_made_once(choice_key(model_path, card, device), progress))
        order = choose(factory, progress, notes) if runtime == AUTO else [forced(runtime, device)]
        choice = order[0]
        progress.update("runtime", 0, 1, f"Preparing {choice.label}")  # a new model's export and int8 model: seconds
        try:
            forward = factory.build(choice)
        except ModelError as exc:
            if choice.precision == "int8":
                # Its masks moved (a fine-tuned model whose network's measured choice is int8): auto takes the next fastest
                # measured here that is not int8 (whose own check would likely refuse as well) and still runs here (a
                # runtime may have been uninstalled since); a forced runtime its fp32.
                notes.append(str(exc))
                here = candidates(device)
                choice = next((c for c in order[1:] if c.precision != "int8" and c in here), Candidate(choice.runtime, "fp32"))
                forward = factory.build(choice)
            else:  # a model that does not export: PyTorch runs it
                notes.append(f"{exc} PyTorch eager is used.")
                choice = Candidate("torch", _torch_precision(device))
                forward = factory.build(choice)
    predictor = Predictor(None, card, device, forward=forward)
    predictor.runtime = choice.label
    return predictor, notes


class Readiness(NamedTuple):
    runtime: str
    """The runtime detection will run (``auto`` while its choice is unmeasured)."""
    left: str
    """What a first detection would still make before its first tile; empty when nothing."""


def readiness(model_path: str | Path, device: str, runtime: str = AUTO) -> Readiness:
    """Whether a detection with this model on ``device`` (as ``device_name`` spells it) starts at once, asking PyTorch
    nothing: the dock asks it of every model it shows. A first detection otherwise measures auto's choice, exports the
    model and makes its int8 model and agreement check where that is the choice: a first detection with the bundled
    model took 67-74 s without them, 4.6-4.8 s with them, on a 2-core AMD EPYC (docs/benchmarks_amd_first_detection.md)."""
    model_path = Path(model_path)
    card = read_card(model_path)
    if runtime == AUTO:
        entry = _read_cache().get(choice_key(model_path, card, device))
        if entry is None:
            return Readiness(AUTO, "measure which runtime is fastest here")
        name, precision = entry["runtime"], entry["precision"]
    else:
        name, _, precision = runtime.partition(" ")
    label = f"{name} {precision}".strip()
    if name in ("torch", "torchscript") or not _on_cpu(device):
        return Readiness(label, "")
    from .quantise import kept_verdict

    digest = model_hash(model_path)
    if precision == "int8" and kept_verdict(onnx_path(digest), digest, name) is None:
        return Readiness(label, "make and check its int8 model")
    return Readiness(label, "" if onnx_path(digest).is_file() else "export it to ONNX")


def prepare(model_path: str | Path, device: str, runtime: str = AUTO, progress: Optional[Progress] = None) -> dict:
    """Make now whatever a first detection with this model would make before its first tile (``readiness``), so that
    the dock can have it made in the background while the analyst looks at the scene."""
    started = time.perf_counter()
    ready = readiness(model_path, device, runtime)
    notes: list[str] = []
    label = ready.runtime
    if ready.left:
        progress = progress or silent()
        progress.log(f"Preparing {Path(model_path).name} for this machine (once): {ready.left}...")
        predictor, notes = make_predictor(model_path, device, runtime, progress=progress)
        label = predictor.runtime
    return {"model": str(model_path), "device": device, "runtime": label, "made": ready.left, "notes": notes,
            "seconds": round(time.perf_counter() - started, 2)}


def choice_key(model_path: Path, card: ModelCard, device: str) -> str:
    """What auto's measured choice is kept under: this CPU, the device, the network and its tile size, and what the
    candidates run (``CHOICE_FORMAT``)."""
    return f"{cpu_features.cpu_name()}|{device}|{network_signature(model_path, card)}|{card.tile_size}|{CHOICE_FORMAT}"


def choose(factory: Factory, progress: Progress, notes: list[str], tiles: Optional[list[np.ndarray]] = None,
           rounds: int = CALIBRATION_ROUNDS) -> list[Candidate]:
    """The candidates whose masks agree with PyTorch fp32, fastest first (each by its best of ``rounds``), measured
    once per machine and network: the first is auto's choice, the others what a model of the network falls back on."""
    key = choice_key(factory.model_path, factory.card, factory.device)
    entry = _read_cache().get(key)
    return _ranked(entry if entry is not None else _measure_choice(factory, progress, notes, key, tiles, rounds))


@contextmanager
def _made_once(key: str, progress: Progress) -> Iterator[None]:
    """Held while a model of the network ``key`` names is made ready here (its runtime measured, its export and int8
    model made). Another process that needs the same waits for it rather than making them again on the cores the first
    is timing candidates on, which would also skew both measurements: the dock prepares a model as soon as it is chosen
    and the analyst may press Detect meanwhile, and a batch's workers start together."""
    with ExitStack() as lock:
        try:
            cache_file().parent.mkdir(parents=True, exist_ok=True)
            lock.enter_context(waited_for(lock_file(key), progress.waiting("runtime", "Waiting for another run making this model ready")))
        except (OSError, OutputError):
            pass  # a cache folder that cannot be locked: made without waiting
        yield


def lock_file(key: str) -> Path:
    """Held while a model of the network ``key`` names is made ready."""
    return cache_file().with_name(f"runtime_choice.{hashlib.sha256(key.encode()).hexdigest()[:12]}.lock")


def _measure_choice(factory: Factory, progress: Progress, notes: list[str], key: str,
                    tiles: Optional[list[np.ndarray]], rounds: int) -> dict:
    """Times every candidate on real tiles and keeps the fastest whose masks agree, in the cache under ``key``."""
    progress.log("Measuring which runtime is fastest for this model on this machine (once)...")
    tiles = tiles if tiles is not None else choice_tiles(factory.card)
    x = [t[None, None].astype(np.float32) * float(factory.card.normalisation.get("input_scale", 1 / 255)) for t in tiles]
    if not _on_cpu(str(factory.device)):
        # A GPU runs one tile in launch overheads alike in any precision (an H200 chose fp32 so), while detection
        # feeds it full batches, where bf16 is the faster: time the candidates on such a batch, as large as fp32
        # (the candidates' largest) leaves room for on this GPU.
        from .eager import EagerForward

        n = min(GPU_CHOICE_TILES, EagerForward(factory.model, factory.device, None).batch_size(factory.card))
        x = [np.concatenate((x * n)[:n])]
    count = sum(len(t) for t in x)
    reference = factory.reference()
    ref_masks = [slick_mask(reference(t), factory.card) for t in x]
    built: dict[Candidate, Forward] = {}
    report: dict[str, dict] = {}
    listed = candidates(factory.device)
    for i, candidate in enumerate(listed):
        progress.update("runtime", i, len(listed), f"Preparing {candidate.label}")
        try:
            built[candidate] = factory.build(candidate)
            built[candidate](x[0])  # warm-up: compilation, first-call allocations
        except Exception as exc:  # noqa: BLE001 - a candidate that cannot run here is left out, never fatal
            built.pop(candidate, None)
            report[candidate.label] = {"status": str(exc)}
            if candidate.precision == "int8" or "export" in str(exc):
                notes.append(str(exc))
    seconds = {c: [0.0] * rounds for c in built}
    masks: dict[Candidate, list[np.ndarray]] = {c: [] for c in built}
    for r in range(rounds):  # round robin: a shared machine's load falls on every candidate alike
        for t in x:
            for c, forward in built.items():
                started = time.perf_counter()
                logits = forward(t)
                seconds[c][r] += time.perf_counter() - started
                masks[c].append(slick_mask(logits, factory.card))
    agree = {c: pooled_dice(ref_masks * rounds, masks[c]) for c in built}
    per_tile = {c: min(seconds[c]) / count for c in built}
    for c in built:
        report[c.label] = {"s_per_tile": round(per_tile[c], 4), "dice_vs_torch_fp32": round(agree[c], 4)}
    eligible = [c for c in built if agree[c] >= AGREEMENT]
    if not eligible:  # PyTorch fp32 itself did not run: nothing to compare with
        raise ModelError(f"{factory.card.name} ran in no runtime on this machine's check tiles: "
                         + "; ".join(f"{label}: {m.get('status', m)}" for label, m in report.items()) + ".",
                         "Check that the model file loads (`python -m engine models`), or choose another model.")
    best = min(eligible, key=lambda c: per_tile[c])
    entry = {"runtime": best.runtime, "precision": best.precision, "measured": report,
             "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "model": str(factory.model_path)}
    _write_cache({**_read_cache(), key: entry})
    progress.log(f"Fastest here: {best.label} ({report[best.label]['s_per_tile']} s per tile).")
    return entry


def _ranked(entry: dict) -> list[Candidate]:
    """A cached choice's candidates, the chosen one first, then every other that agreed, fastest first."""
    chosen = Candidate(entry["runtime"], entry["precision"])
    agreed = sorted((m["s_per_tile"], label) for label, m in entry.get("measured", {}).items()
                    if "s_per_tile" in m and m["dice_vs_torch_fp32"] >= AGREEMENT)
    return [chosen, *(c for c in (Candidate(*label.split(" ", 1)) for _, label in agreed) if c != chosen)]


def _read_cache() -> dict:
    try:
        return json.loads(cache_file().read_text())
    except (OSError, ValueError):
        return {}


def _write_cache(cache: dict) -> None:
    try:
        write_text(cache_file(), json.dumps(cache, indent=1))
    except OSError:
        pass  # no writable cache: auto measures again next time, nothing else changes


def describe(candidate: Candidate) -> dict:
    return asdict(candidate)
