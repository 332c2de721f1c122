"""The runtimes behind Predictor: same probabilities as PyTorch, auto's measured choice, int8's agreement check."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import expit

from engine.models import agreement, cpu_features, runtimes
from engine.errors import ModelError, ResourceError
from engine.models.eager import EagerForward, fast_dtype, pick_device
from engine.models.inference import Predictor, device_name, sigmoid
from engine.models.registry import BUNDLED_DIR, load_model, read_card, save_model
from engine.progress import Progress
from engine.models.quantise import OPENVINO_INT8_FORMAT, quantisation_inputs, quantised_model
from engine.models.training import training_dtype

from conftest import make_ensemble

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, model_factory):
    return model_factory(tmp_path_factory.mktemp("rt") / "small.safetensors", tile_size=128)


@pytest.fixture(autouse=True)
def user_dirs(tmp_path_factory, monkeypatch):
    """Exports and the runtime cache of one module share a folder, as they would on one machine."""
    base = tmp_path_factory.getbasetemp() / "runtime_user_dirs"
    monkeypatch.setenv("SLICK_MAPPER_MODELS", str(base / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(base / "cache"))
    return base


def _tiles(model_path) -> np.ndarray:
    card = load_model(model_path)[1]
    return np.stack(agreement.calibration_tiles(card, 2))


@pytest.mark.parametrize("runtime", ["torchscript", "onnxruntime", "openvino"])
def test_each_fp32_runtime_gives_pytorch_s_probabilities(small_model, runtime, user_dirs):
    tiles = _tiles(small_model)
    model, card = load_model(small_model)
    reference = Predictor(model, card, CPU, fast=False)(tiles)
    predictor, notes = runtimes.make_predictor(small_model, CPU, runtime)
    assert predictor.runtime == f"{runtime} fp32" and notes == []
    assert np.abs(predictor(tiles) - reference).max() < 1e-3
    if runtime != "torchscript":  # exported beside the user's models, keyed by the model's hash
        digest = runtimes.model_hash(small_model)
        assert (user_dirs / "models" / ".exports" / f"{digest}.onnx").is_file()
        assert not list(BUNDLED_DIR.glob("*.onnx"))


def test_mirror_averaging_in_an_exported_runtime_gives_pytorch_s_mean(small_model, user_dirs):
    tiles = _tiles(small_model)
    model, card = load_model(small_model)
    reference = Predictor(model, card, CPU, fast=False)
    predictor, _ = runtimes.make_predictor(small_model, CPU, "onnxruntime")
    reference.tta = predictor.tta = True
    mirrored = predictor(tiles)
    assert np.abs(mirrored - reference(tiles)).max() < 1e-3
    predictor.tta = False
    assert np.abs(mirrored - predictor(tiles)).max() > 1e-3  # the views differ: a mean of one view four times would not


def test_the_sigmoid_is_scipy_s_within_four_ulp_and_zero_where_it_is():
    logits = np.linspace(-120, 40, 200_001, dtype=np.float32)
    ours, scipy_s = sigmoid(logits), expit(logits)
    assert ours.dtype == np.float32
    np.testing.assert_array_max_ulp(ours, scipy_s, maxulp=4)
    assert np.array_equal(ours == 0, scipy_s == 0)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_a_runtime_whose_export_exists_starts_without_the_pytorch_network(small_model, runtime, monkeypatch):
    tiles = _tiles(small_model)
    first, _ = runtimes.make_predictor(small_model, CPU, runtime)  # exports, once per model hash
    expected = first(tiles)

    def refuse(*args, **kwargs):
        raise AssertionError("the PyTorch network was built")

    monkeypatch.setattr(runtimes, "load_model", refuse)
    again, _ = runtimes.make_predictor(small_model, CPU, runtime)
    assert again.runtime == f"{runtime} fp32"
    np.testing.assert_array_equal(again(tiles), expected)


@pytest.mark.parametrize("runtime", ["openvino", "openvino int8"])
def test_a_cpu_detection_on_an_exported_model_never_imports_pytorch(small_model, sample_scene, tmp_path, runtime):
    """Importing PyTorch is about 1.3 s of CPU in every detection the plugin or the command line starts; with
    the model's export and its int8 verdict made (the first run makes them, and needs PyTorch for that: NNCF
    imports it), a CPU detection needs none, forced to a precision or not."""
    code = ("import sys; from engine.cli.main import main; "
            f"code = main(['--jsonl', 'detect', {str(sample_scene)!r}, '--out', {str(tmp_path / 'out')!r}, '--model', {str(small_model)!r}, "
            f"'--device', 'cpu', '--runtime', {runtime!r}, '--overlap', '16', '--overwrite']); print(code, 'torch' in sys.modules)")
    env = {**os.environ, "SLICK_MAPPER_MODELS": str(tmp_path / "models")}  # no export yet
    runs = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    assert [run.stdout.splitlines()[-1] for run in runs] == ["0 True", "0 False"], runs[0].stdout[-2000:] + runs[0].stderr
    assert '"runtime": "openvino ' in runs[-1].stdout


def test_a_thread_limit_reaches_every_runtime_and_a_pytorch_loaded_later():
    code = ("import sys; from engine.models.runtimes import inference_threads, limit_threads; limit_threads(1); "
            "before = inference_threads(), 'torch' in sys.modules; import torch; print(*before, torch.get_num_threads())")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "False", "1"]


def test_device_name_asks_pytorch_only_where_a_gpu_could_answer():
    code = "import sys; from engine.models.inference import device_name; print(device_name('cpu'), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "cpu False"
    assert device_name("auto") == str(pick_device("auto"))


@pytest.mark.parametrize("platform, libraries, mac, asks", [
    ("win32", {}, None, False), ("win32", {"nvcuda": "C:\\Windows\\System32\\nvcuda.dll"}, None, True),
    ("darwin", {}, ("arm64", "14.5"), True), ("darwin", {}, ("arm64", "12.3"), True), ("darwin", {}, ("arm64", "11.7.10"), False),
    ("darwin", {}, ("x86_64", "13.6"), False)])
def test_device_name_off_linux_asks_pytorch_only_where_a_gpu_driver_could_answer(monkeypatch, platform, libraries, mac, asks):
    asked = []
    monkeypatch.setattr(sys, "platform", platform)
    monkeypatch.setattr("ctypes.util.find_library", libraries.get)
    if mac:  # Apple silicon from macOS 12.3 has a Metal device PyTorch can use; an Intel Mac has none
        monkeypatch.setattr("platform.machine", lambda: mac[0])
        monkeypatch.setattr("platform.mac_ver", lambda: (mac[1], ("", "", ""), mac[0]))
    monkeypatch.setattr("engine.models.eager.pick_device", lambda name: asked.append(name) or "cuda")
    assert device_name("auto") == ("cuda" if asks else "cpu") and asked == (["auto"] if asks else [])


def test_openvino_compiles_a_tile_shape_once_per_machine(small_model):
    predictor, _ = runtimes.make_predictor(small_model, CPU, "openvino")
    predictor(_tiles(small_model))
    cache = runtimes.openvino_cache(runtimes.onnx_path(runtimes.model_hash(small_model)))
    assert any(p.stat().st_size > 0 for p in cache.iterdir())


def test_auto_measures_once_per_machine_and_model(small_model, user_dirs):
    """Once per machine, network and what the candidates run: a choice kept before OpenVINO's int8 changed (its key
    without the format) is measured again, not taken."""
    logs = []
    progress = Progress(lambda *a: None, log=logs.append)
    older = f"{cpu_features.cpu_name()}|cpu|{runtimes.network_signature(small_model, read_card(small_model))}|128"
    runtimes.cache_file().parent.mkdir(parents=True, exist_ok=True)
    runtimes.cache_file().write_text(json.dumps({older: {"runtime": "torchscript", "precision": "fp32"}}))
    predictor, _ = runtimes.make_predictor(small_model, CPU, "auto", progress=progress)
    assert any("Measuring" in line for line in logs)
    cache = json.loads(runtimes.cache_file().read_text())
    key = f"{older}|{runtimes.CHOICE_FORMAT}"
    entry = cache[key]
    measured = entry["measured"]
    assert predictor.runtime == f"{entry['runtime']} {entry['precision']}"
    assert {"torch fp32", "torchscript fp32", "onnxruntime fp32", "openvino fp32"} <= set(measured)
    chosen = measured[predictor.runtime]
    assert chosen["dice_vs_torch_fp32"] >= agreement.AGREEMENT
    timed = [m["s_per_tile"] for m in measured.values() if "s_per_tile" in m and m["dice_vs_torch_fp32"] >= agreement.AGREEMENT]
    assert chosen["s_per_tile"] == min(timed)
    assert any("Measuring" in line for line in logs)
    logs.clear()
    again, _ = runtimes.make_predictor(small_model, CPU, "auto", progress=progress)
    assert again.runtime == predictor.runtime and not any("Measuring" in line for line in logs)


def test_a_model_of_a_measured_network_takes_its_runtime_untimed(small_model, user_dirs, tmp_path, model_factory):
    """A fine-tuned model (here the same weights under another card: another file hash) runs as fast as its parent in
    every runtime: its first detection takes the parent's measured choice without timing the candidates again. A
    model of another network is another question."""
    parent, _ = runtimes.make_predictor(small_model, CPU, "auto")
    model, card = load_model(small_model)
    card.name = "fine-tuned test model"
    child = save_model(model, card, tmp_path / "child.safetensors")
    assert runtimes.model_hash(child) != runtimes.model_hash(small_model)
    logs = []
    predictor, notes = runtimes.make_predictor(child, CPU, "auto", progress=Progress(lambda *a: None, log=logs.append))
    assert predictor.runtime == parent.runtime and notes == [] and not any("Measuring" in line for line in logs)
    other = model_factory(tmp_path / "two_bands.safetensors", tile_size=128, in_channels=2)
    assert runtimes.network_signature(other, read_card(other)) != runtimes.network_signature(child, card)


def test_a_model_whose_int8_is_refused_takes_the_next_fastest_measured_runtime(small_model, user_dirs, monkeypatch):
    """Its network measured fastest in OpenVINO int8, then ONNX Runtime int8, then ONNX Runtime fp32, then OpenVINO fp32
    (a fine-tuned model's parent, as on an Ice Lake Xeon): where this model's own int8 is refused, auto runs ONNX Runtime
    fp32, the fastest that is not int8, rather than OpenVINO in fp32, and says why; with ONNX Runtime gone since, OpenVINO fp32."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_dirs / "refused_int8_cache"))  # this test's made-up measurement only
    card = read_card(small_model)
    key = f"{cpu_features.cpu_name()}|cpu|{runtimes.network_signature(small_model, card)}|{card.tile_size}|{runtimes.CHOICE_FORMAT}"
    measured = {"openvino int8": 0.010, "onnxruntime int8": 0.015, "onnxruntime fp32": 0.020, "openvino fp32": 0.030, "torch fp32": 0.040}
    entry = {"runtime": "openvino", "precision": "int8",
             "measured": {label: {"s_per_tile": s, "dice_vs_torch_fp32": 0.99 if label.endswith("int8") else 1.0} for label, s in measured.items()}}
    entry["measured"]["torch bf16"] = {"s_per_tile": 0.001, "dice_vs_torch_fp32": 0.9}  # fast, but its masks moved
    runtimes.cache_file().parent.mkdir(parents=True, exist_ok=True)
    runtimes.cache_file().write_text(json.dumps({key: entry}))
    refused = "int8 masks differ from fp32 (slick Dice 0.9000 < 0.98 on 6 real tiles it was not calibrated on): kept in fp32"
    monkeypatch.setattr(runtimes.Factory, "int8", lambda self, runtime: (None, refused))
    predictor, notes = runtimes.make_predictor(small_model, CPU, "auto")
    assert predictor.runtime == "onnxruntime fp32" and any(refused in n for n in notes)
    listed = runtimes.candidates(CPU)  # ONNX Runtime uninstalled since the measurement: the next one that runs here
    monkeypatch.setattr(runtimes, "candidates", lambda device: [c for c in listed if c.runtime != "onnxruntime"])
    assert runtimes.make_predictor(small_model, CPU, "auto")[0].runtime == "openvino fp32"
    assert [c.label for c in runtimes.choose(runtimes.Factory(small_model, card, CPU), Progress(lambda *a: None), [])] == list(measured)


def test_a_gpu_times_its_candidates_on_the_batch_its_memory_holds(small_model, user_dirs, monkeypatch):
    """On a GPU the candidates are timed on a full batch (32 tiles), or on as many as fp32 leaves room for there:
    a large network on a small GPU must still be timed, not run out of memory. The GPU is played by the CPU,
    with room for three tiles."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_dirs / "gpu_cache"))
    monkeypatch.setattr(runtimes, "_on_cpu", lambda device: False)
    monkeypatch.setattr(EagerForward, "batch_size", lambda self, card: 3)
    fed = []
    build = runtimes.Factory.build

    def recording(self, candidate):
        forward = build(self, candidate)
        return lambda x: fed.append(x.shape[0]) or forward(x)

    monkeypatch.setattr(runtimes.Factory, "build", recording)
    card = read_card(small_model)
    factory = runtimes.Factory(small_model, card, CPU)
    chosen = runtimes.choose(factory, Progress(lambda *a: None), [])[0]
    assert chosen.runtime == "torch" and fed and set(fed) == {3}


def test_one_slow_call_does_not_decide_the_runtime(small_model, user_dirs, monkeypatch):
    """Two runtimes made to take fixed times on a simulated clock (the network's own speed on a slow or busy CPU
    must not decide the test): the faster one stalls once. Summed over every call it would lose; timed by its best
    round, as ``choose`` times them, it wins."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_dirs / "stall_cache"))
    steady, stalling = runtimes.Candidate("torch", "fp32"), runtimes.Candidate("torchscript", "fp32")
    monkeypatch.setattr(runtimes, "candidates", lambda device: [steady, stalling])
    build = runtimes.Factory.build
    clock = [0.0]
    monkeypatch.setattr(runtimes, "time", type("SimulatedTime", (), {"perf_counter": staticmethod(lambda: clock[0])}))

    def timed_build(self, candidate):
        forward, calls = build(self, candidate), []

        def run(x):
            calls.append(1)
            clock[0] += 0.05 if candidate == steady else 0.5 if len(calls) == 2 else 0.02
            return forward(x)
        return run

    monkeypatch.setattr(runtimes.Factory, "build", timed_build)
    predictor, _ = runtimes.make_predictor(small_model, CPU, "auto")
    assert predictor.runtime == "torchscript fp32"
    measured = json.loads(runtimes.cache_file().read_text())
    assert [entry["measured"]["torchscript fp32"]["s_per_tile"] for entry in measured.values()] == [0.02]


def test_int8_whose_masks_move_is_kept_in_fp32(tmp_path, model_factory):
    """A random network cut at the median of its own probabilities: int8's rounding flips many pixels."""
    path = model_factory(tmp_path / "edge.safetensors", tile_size=128)
    model, card = load_model(path)
    tiles = agreement.calibration_tiles(card, 8)
    with torch.inference_mode():
        probs = torch.sigmoid(model(torch.from_numpy(np.stack(tiles)[:, None] / 255.0)))
    card.threshold = float(probs.median())
    digest = runtimes.model_hash(path)
    onnx_path = runtimes.export_onnx(model, card, digest)
    compared: list[np.ndarray] = []
    fp32 = EagerForward(model, CPU, None)

    def reference(x: np.ndarray) -> np.ndarray:
        compared.append(x[0, 0])
        return fp32(x)

    int8, message = quantised_model(onnx_path, card, digest, reference, lambda path: runtimes.onnxruntime_forward(path, 0))
    assert int8 is None and "kept in fp32" in message and "not calibrated on" in message
    verdict = json.loads(onnx_path.with_name(f"{digest}.int8.json").read_text())
    assert verdict["passed"] is False and verdict["dice_vs_fp32"] < 0.98 and verdict["tiles"] == 8 == verdict["calibration_tiles"]
    # The masks are compared on real tiles the activation ranges were not taken from.
    calibrated = [t / 255.0 for t in agreement.calibration_tiles(card, 16)[0::2]]
    assert len(compared) == 8 and not any(np.allclose(c, k, atol=1e-6) for c in compared for k in calibrated)
    assert not onnx_path.with_name(f"{digest}.int8.onnx").exists()


def test_openvino_int8_is_its_own_quantisation_and_keeps_the_bundled_model_s_masks(capfd, monkeypatch):
    """OpenVINO ran ONNX Runtime's QDQ int8 model of the bundled U-Net with its own kernels, masks far from fp32's; its
    own int8 model (NNCF, the first convolution and the head kept in float) agrees on tiles it was not calibrated on,
    is remembered until the way it is made changes, and writes nothing to the engine's stdout, which carries its JSON lines."""
    import nncf
    import openvino as ov

    from engine.models.quantise import edge_convolutions
    from engine.models.registry import LIGHT_MODEL

    model, card = load_model(LIGHT_MODEL)
    factory = runtimes.Factory(LIGHT_MODEL, card, CPU, model)
    edges = edge_convolutions(ov.Core().read_model(str(factory.onnx())))
    assert [name.split("/")[1:3] for name in edges] == [["encoder", "model"], ["segmentation_head", "segmentation_head.0"]]
    path, verdict = factory.int8("openvino")
    assert capfd.readouterr().out == ""
    assert path is not None and path.suffix == ".xml" and path.with_suffix(".bin").is_file() and "agree with fp32" in verdict
    held = quantisation_inputs(card)[1]
    reference, int8 = EagerForward(model, CPU, None), runtimes.openvino_forward(path, "int8", 2)
    masks = [[agreement.slick_mask(forward(t), card) for t in held] for forward in (reference, int8)]
    assert agreement.pooled_dice(*masks) >= agreement.AGREEMENT
    monkeypatch.setattr(nncf, "quantize", lambda *a, **k: pytest.fail("quantised again"))
    assert runtimes.Factory(LIGHT_MODEL, card, CPU, model).int8("openvino") == (path, verdict)
    # A verdict on an int8 model made another way (before the head was split) is not taken for this one's.
    verdict_path = path.with_suffix(".json")
    current = verdict_path.read_text()
    verdict_path.write_text(json.dumps({**json.loads(current), "format": OPENVINO_INT8_FORMAT - 1}))

    def made_again(*args, **kwargs):
        raise LookupError("quantised again")

    monkeypatch.setattr(nncf, "quantize", made_again)
    with pytest.raises(LookupError, match="quantised again"):
        runtimes.Factory(LIGHT_MODEL, card, CPU, model).int8("openvino")
    verdict_path.write_text(current)  # the other tests' int8 model stays the one checked above


def test_a_one_channel_head_split_in_two_gives_the_same_logits(small_model, user_dirs):
    """The int8 model is made from a network whose one-channel head is a depthwise convolution and a 1x1 sum of its
    channels: in fp32 that network gives the exported one's logits, and the one-channel convolution is gone; a 1x1 head
    stays as it is."""
    import openvino as ov

    from engine.models.quantise import split_heads

    card = read_card(small_model)
    core = ov.Core()
    onnx = runtimes.Factory(small_model, card, CPU).onnx()
    split = core.read_model(str(onnx))
    heads = [op.get_friendly_name() for op in split.get_ordered_ops()
             if op.get_type_name() == "Convolution" and op.get_output_partial_shape(0)[1] == 1]
    assert len(heads) == 1 and split_heads(split) == [f"{heads[0]}/depthwise"]
    assert heads[0] not in {op.get_friendly_name() for op in split.get_ordered_ops()}
    x = _tiles(small_model)[:, None] * np.float32(card.normalisation["input_scale"])
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    before, after = (core.compile_model(network, "CPU", config)(x)[0] for network in (core.read_model(str(onnx)), split))
    assert before.std() > 1e-3  # logits that vary over the tiles, not a constant the split could match by chance
    np.testing.assert_allclose(after, before, atol=1e-3 * np.abs(before).max())
    # A 1x1 head (DeepLabV3's) is a dot product per pixel already: left as it is.
    import openvino.opset13 as ops

    x = ops.parameter([1, 4, 8, 8], np.float32)
    one_by_one = ov.Model([ops.convolution(x, ops.constant(np.ones((1, 4, 1, 1), np.float32)), [1, 1], [0, 0], [0, 0], [1, 1])], [x])
    assert split_heads(one_by_one) == []


def test_a_model_that_does_not_export_runs_with_pytorch(tmp_path, model_factory, monkeypatch):
    # Its own name: every factory model has the same weights, and one saved in the same second as the test
    # before it would share that model's hash and find its cached export instead of exporting.
    path = model_factory(tmp_path / "noexport.safetensors", tile_size=128, name="a model that does not export")

    def refuse(*args, **kwargs):
        raise RuntimeError("Exporting the operator 'aten::weird' to ONNX opset 17 is not supported")

    monkeypatch.setattr(torch.onnx, "export", refuse)
    predictor, notes = runtimes.make_predictor(path, CPU, "onnxruntime")
    assert predictor.runtime.startswith("torch") and isinstance(predictor.forward, EagerForward)
    assert any("does not export to ONNX" in n and "aten::weird" in n and "PyTorch eager is used" in n for n in notes)


def test_a_runtime_that_is_not_installed_names_its_install_command(small_model, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # what Python does when the package is absent
    with pytest.raises(ResourceError, match=r"pip install openvino==") as info:
        runtimes.make_predictor(small_model, CPU, "openvino")
    assert "not installed" in str(info.value)
    assert all(c.runtime != "openvino" for c in runtimes.candidates(CPU))


def test_a_runtime_forced_with_its_precision_runs_in_it_or_says_why_not(small_model, monkeypatch):
    """``--runtime 'onnxruntime int8'`` runs that model where its int8 agrees, that runtime in fp32 where it does not
    (said so); a precision this CPU lacks natively is refused with what runs here, an unknown one with the choices."""
    predictor, notes = runtimes.make_predictor(small_model, CPU, "onnxruntime fp32")
    assert predictor.runtime == "onnxruntime fp32" and notes == []
    refused = "int8 masks differ from fp32 (slick Dice 0.5000 < 0.98 on 6 real tiles it was not calibrated on): kept in fp32"
    monkeypatch.setattr(runtimes.Factory, "int8", lambda self, runtime: (None, refused))
    predictor, notes = runtimes.make_predictor(small_model, CPU, "onnxruntime int8")
    assert predictor.runtime == "onnxruntime fp32" and any(refused in n for n in notes)
    if cpu_features.native_bf16():
        assert runtimes.make_predictor(small_model, CPU, "openvino bf16")[0].runtime == "openvino bf16"
    else:
        with pytest.raises(ResourceError, match="does not run on this machine"):
            runtimes.make_predictor(small_model, CPU, "openvino bf16")
    monkeypatch.setattr(cpu_features, "native_bf16", lambda: False)
    with pytest.raises(ResourceError, match=r"openvino bf16 does not run on this machine.*openvino fp32"):
        runtimes.make_predictor(small_model, CPU, "openvino bf16")
    with pytest.raises(ModelError, match="Unknown runtime 'torch int8'.*openvino bf16"):
        runtimes.make_predictor(small_model, CPU, "torch int8")


def test_bf16_is_a_candidate_only_where_the_cpu_has_it(monkeypatch):
    """The CPU's flags answer where Linux lists them, without loading PyTorch; elsewhere oneDNN's own check does."""
    labels = {c.label for c in runtimes.candidates(CPU)}
    assert ("torch bf16" in labels) == ("openvino bf16" in labels) == cpu_features.native_bf16()
    assert cpu_features.summary()["cpu"] == cpu_features.cpu_name()
    code = "import sys; from engine.models import cpu_features; print(cpu_features.native_bf16(), 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if cpu_features.flags():
        assert out == [str(bool(cpu_features.flags() & set(cpu_features.BF16_FLAGS))), "False"]
    monkeypatch.setattr(cpu_features, "flags", set)  # a system that lists none
    assert cpu_features.native_bf16() == bool(torch.ops.mkldnn._is_mkldnn_bf16_supported() and torch.backends.mkldnn.is_available())


def test_pytorch_runs_bf16_on_a_cpu_only_where_its_flags_have_it(monkeypatch):
    """oneDNN calls bf16 supported on AVX-512 CPUs without bf16 units and emulates it there (training at half fp32's
    rate on a 2-core Ice Lake Xeon): the CPU's flags decide training's and eager inference's dtype, as they decide
    which exported runtimes run bf16."""
    for native in (False, True):
        monkeypatch.setattr(cpu_features, "native_bf16", lambda native=native: native)
        assert fast_dtype("cpu") == (torch.bfloat16 if native else None)
        assert training_dtype(torch.device("cpu")) == fast_dtype("cpu")
        assert ("torch bf16" in {c.label for c in runtimes.candidates(CPU)}) == native


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_batches_fill_free_memory(small_model):
    device = pick_device("cuda")
    predictor, _ = runtimes.make_predictor(small_model, device, "auto")
    tiles = _tiles(small_model)
    assert predictor.batch_size > 1 and predictor.runtime.startswith("torch")
    model, card = load_model(small_model)
    reference = Predictor(model, card, CPU, fast=False)
    assert np.abs(predictor(tiles) - reference(tiles)).max() < 0.05
    predictor.tta = reference.tta = True  # the views made and averaged on the GPU
    assert np.abs(predictor(tiles) - reference(tiles)).max() < 0.05


def test_every_bundled_model_has_real_tiles_for_auto_to_choose_its_runtime_on(user_dirs, monkeypatch):
    """The dark-spot detector's tiles (1,024 px) are larger than the calibration scenes allow with three quarters data:
    auto then had no tile to time, and the default runtime failed on that model with a bare ValueError."""
    darkspot = BUNDLED_DIR / "darkspot_baseline_25m.safetensors"
    for path in sorted(BUNDLED_DIR.glob("slick_*.safetensors")) + [darkspot]:
        card = read_card(path)
        tiles = agreement.choice_tiles(card)
        assert tiles and all(t.shape == (card.tile_size, card.tile_size) and (t > 0).mean() > 0.5 for t in tiles), path.name
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_dirs / "darkspot_cache"))
    monkeypatch.setattr(runtimes, "candidates", lambda device: [runtimes.Candidate("torch", "fp32"), runtimes.Candidate("torchscript", "fp32")])
    predictor, _ = runtimes.make_predictor(darkspot, CPU, "auto")
    assert predictor.runtime in ("torch fp32", "torchscript fp32")


def test_a_model_that_runs_in_no_runtime_says_so(small_model, user_dirs, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(user_dirs / "broken_cache"))

    def broken(self, candidate):
        raise RuntimeError(f"{candidate.label} cannot run it")

    monkeypatch.setattr(runtimes.Factory, "build", broken)
    with pytest.raises(ModelError, match="ran in no runtime on this machine's check tiles: torch fp32: torch fp32 cannot run it"):
        runtimes.make_predictor(small_model, CPU, "auto")


def test_no_mask_check_runs_on_a_tile_int8_was_calibrated_on(tmp_path, model_factory):
    """The quantiser's check and ``auto``'s comparison both use real tiles the activation ranges never saw: on its
    own calibration tiles the bundled model's int8 agreed at 0.994, on others at 0.988."""
    card = read_card(model_factory(tmp_path / "split.safetensors", tile_size=128))
    calibration, held = agreement.quantisation_split(card)
    assert calibration and held
    assert not any(np.array_equal(c, h) for c in calibration for h in held)
    chosen_on = agreement.choice_tiles(card)
    assert len(chosen_on) == 2 and all(any(np.array_equal(t, h) for h in held) for t in chosen_on)


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_an_ensemble_exports_and_runs_as_one_network(small_model, runtime, tmp_path):
    """Two members' mean logit is one graph: each exporting runtime gives PyTorch's probabilities of it."""
    path = make_ensemble(small_model, tmp_path / "ensemble.safetensors")
    member, card = load_model(small_model)
    ensemble, ensemble_card = load_model(path)
    tiles = _tiles(path)
    reference = Predictor(ensemble.eval(), ensemble_card, CPU, fast=False)(tiles)
    assert np.abs(reference - Predictor(member.eval(), card, CPU, fast=False)(tiles)).max() > 1e-3
    predictor, notes = runtimes.make_predictor(path, CPU, runtime)
    assert predictor.runtime == f"{runtime} fp32" and notes == []
    assert np.abs(predictor(tiles) - reference).max() < 1e-3


def test_a_run_waits_for_the_model_preparation_another_is_making(small_model, tmp_path, monkeypatch):
    """The dock prepares a model as soon as it is chosen; a detection started meanwhile waits for that preparation and
    takes its answer, instead of timing every candidate a second time on the cores the first is timing them on."""
    import threading

    from engine.locks import held

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SLICK_MAPPER_MODELS", str(tmp_path / "models"))
    key = runtimes.choice_key(small_model, read_card(small_model), "cpu")
    said, logs, made = [], [], {}
    progress = Progress(lambda stage, done, total, message="": said.append(message), log=logs.append)
    runtimes.cache_file().parent.mkdir(parents=True)
    with held(runtimes.lock_file(key)):  # the other process, preparing
        worker = threading.Thread(target=lambda: made.update(predictor=runtimes.make_predictor(small_model, "cpu", "auto", progress=progress)[0]))
        worker.start()
        worker.join(2.0)
        assert worker.is_alive() and any("Waiting for another run making this model ready" in m for m in said)
        measured = {"onnxruntime fp32": {"s_per_tile": 0.01, "dice_vs_torch_fp32": 1.0}}
        runtimes.cache_file().write_text(json.dumps({key: {"runtime": "onnxruntime", "precision": "fp32", "measured": measured}}))
    worker.join(120)
    assert made["predictor"].runtime == "onnxruntime fp32" and not any("Measuring" in line for line in logs)


def test_prepare_makes_what_a_first_detection_would_and_then_nothing(small_model, sample_scene, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SLICK_MAPPER_MODELS", str(tmp_path / "models"))
    assert runtimes.readiness(small_model, "cpu") == ("auto", "measure which runtime is fastest here")
    made = runtimes.prepare(small_model, "cpu")
    assert made["made"] == "measure which runtime is fastest here" and made["runtime"] != "auto"
    assert runtimes.readiness(small_model, "cpu") == (made["runtime"], "")
    again = runtimes.prepare(small_model, "cpu")
    assert again["made"] == "" and again["runtime"] == made["runtime"]
    code = ("import sys; from engine.cli.main import main; "
            f"code = main(['--jsonl', 'detect', {str(sample_scene)!r}, '--out', {str(tmp_path / 'out')!r}, '--model', {str(small_model)!r}, "
            f"'--device', 'cpu', '--runtime', 'auto', '--overlap', '16']); print(code)")
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert run.stdout.splitlines()[-1] == "0", run.stdout[-2000:] + run.stderr
    assert "Measuring" not in run.stdout and f'"runtime": "{made["runtime"]}"' in run.stdout


@pytest.mark.parametrize("runtime", ["torch", "openvino int8"])
def test_prepare_asks_pytorch_nothing_when_nothing_is_left(small_model, tmp_path, runtime):
    """The dock runs ``prepare`` on every model it shows: once a model is ready, that costs no PyTorch import."""
    code = ("import sys; from engine.cli.main import main; "
            f"code = main(['--jsonl', 'prepare', '--model', {str(small_model)!r}, '--device', 'cpu', '--runtime', {runtime!r}]); "
            "print(code, 'torch' in sys.modules)")
    env = {**os.environ, "SLICK_MAPPER_MODELS": str(tmp_path / "models"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    runs = [subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]
    first, second = (json.loads(run.stdout.splitlines()[-2])["data"] for run in runs)
    assert second["made"] == "" and second["runtime"] == runtime
    if runtime == "torch":  # nothing to make, ever
        assert first["made"] == "" and runs[0].stdout.splitlines()[-1] == "0 False"
    else:
        assert first["made"] == "make and check its int8 model" and runs[0].stdout.splitlines()[-1] == "0 True"
    assert runs[1].stdout.splitlines()[-1] == "0 False"
