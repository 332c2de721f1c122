"""Generating samples from the dock with the real engine: train, generate, browse, keep/discard, cancel.

Label stores are made in this process by the engine's own import from the real Arctic tile's label mask (an
engine child would cost seconds of imports; the plugin's runs are what is tested). The generator is the
engine's small network on 32-pixel tiles trained for a few steps, and samples take a few solver steps
(the options page's generator settings, which the tests set): enough to exercise every path in seconds,
not to make good samples. One run through the dock (module fixture) trains a generator and makes five
samples; the other tests start from copies of its project folder. Engine children run on one thread, as
the engine's own generator tests do: on a busy 2-core machine OpenMP's fork and join cost more than
networks this small.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List

import numpy as np
import pytest
from osgeo import gdal
from qgis.core import QgsProject
from pytestqt.qtbot import QtBot
from qgis.PyQt.QtCore import Qt

from engine import contract
from engine.cli.main import parse_args
from engine.generation.cli import train_options
from engine.generation.generator import GeneratorOptions
from engine.generation.joint_ddpm import GeneratorCard, build_unet, save_generator, unet_config
from engine.generation.jointnet import JointNetOptions
from engine.jobs.labels import create_store, import_mask
from slick_plugin import classFactory, sample_files, settings
from slick_plugin import contract as plugin_contract
from slick_plugin.dock import SlickMapperDock
from slick_plugin.finetune_panel import FinetunePanel
from slick_plugin.generate_panel import GeneratePanel
from slick_plugin.run_controls import RunState
from slick_plugin.sample_browser import DISCARDED_TEXT
from slick_plugin.engine_runner import LOW_PRIORITY_NICE, EngineCommand, Status

from .conftest import OUTPUT, SAMPLE, FakeIface, load_scene, needs_model, opened_dock

TINY = {settings.GENERATOR_NET: "small", settings.GENERATOR_STEPS: 3, settings.GENERATOR_LOW_RES_STEPS: 3,
        settings.SAMPLING_STEPS: 3, settings.GENERATION_PRIORITY: "normal"}
"""Normal priority except where niceness is checked: on a shared machine a niced engine waits for everyone else."""
FIRST_RUN = 5
"""Samples of the module's first run: two batches (the engine makes four at a time on a CPU)."""
OURS = os.getpriority(os.PRIO_PROCESS, 0)
LOW = min(OURS + LOW_PRIORITY_NICE, 19)


def niceness(pid: int) -> List[int]:
    """The nice value of every thread of process ``pid`` (empty once it has exited)."""
    values = []
    for stat in Path(f"/proc/{pid}/task").glob("*/stat"):
        try:
            values.append(int(stat.read_text().rsplit(")", 1)[1].split()[16]))
        except (OSError, IndexError):
            pass
    return values


@contextmanager
def setting(declared: settings.Setting, value: object) -> Iterator[None]:
    """``declared`` set to ``value`` for a while, then back to the module's value."""
    declared.set_value(value)
    try:
        yield
    finally:
        declared.set_value(TINY.get(declared, declared.default))


def autogroup_nice(pid: int) -> int:
    """The nice value of process ``pid``'s autogroup ("/autogroup-42 nice 10"), which Linux weighs first."""
    return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])


def read_index(folder: Path) -> dict:
    return json.loads((folder / "index.json").read_text())


@dataclass
class Session:
    iface: FakeIface
    dock: SlickMapperDock
    bot: QtBot

    @property
    def panel(self) -> GeneratePanel:
        return self.dock.generate_panel


@pytest.fixture(scope="module")
def blank_store(module_dir: Path) -> Path:
    return create_store(module_dir / "stores" / "blank.gpkg", "EPSG:4326")


def imported(module_dir: Path, blank: Path, name: str, mask: Path) -> Path:
    """A copy of the blank store holding ``mask`` as labels of sample_1, imported by the engine."""
    store = blank.with_name(f"{name}.gpkg")
    shutil.copy(blank, store)
    import_mask(store, module_dir / "sample_1.tif", mask)
    return store


@pytest.fixture(scope="module")
def arctic_store(module_dir: Path, blank_store: Path) -> Path:
    """sample_1's whole label mask: 576 usable tiles of 32 px."""
    return imported(module_dir, blank_store, "arctic", SAMPLE / "labels_mosaic.png")


@pytest.fixture(scope="module")
def few_store(module_dir: Path, blank_store: Path) -> Path:
    """A 128 x 64-pixel piece of sample_1's label mask: 8 tiles of 32 px, too few for a generator."""
    mask = gdal.Open(str(SAMPLE / "labels_mosaic.png"))
    left, size, _, top, _, _ = mask.GetGeoTransform()
    piece = module_dir / "piece.tif"
    out = gdal.GetDriverByName("GTiff").Create(str(piece), 128, 64, 1, gdal.GDT_Byte)
    out.SetGeoTransform((left + 320 * size, size, 0, top - 320 * size, 0, -size))
    out.SetProjection(mask.GetProjection())
    out.GetRasterBand(1).WriteArray(mask.ReadAsArray(320, 320, 128, 64).astype(np.uint8))
    out = None  # closes the file
    return imported(module_dir, blank_store, "few", piece)


@pytest.fixture(scope="module")
def tiny(qgis_app) -> Iterator[None]:
    """The tiny generator configuration, and engine children on one thread."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("OMP_NUM_THREADS", "1")
        for declared, value in TINY.items():
            declared.set_value(value)
        yield
        for declared in TINY:
            declared.set_value(declared.default)


@pytest.fixture(scope="module")
def session(qgis_app, tiny, module_qtbot) -> Iterator[Session]:
    iface = FakeIface()
    with opened_dock(iface, module_qtbot) as dock:
        dock.device.setCurrentText("cpu")
        dock.generate_panel.tile.setValue(32)
        yield Session(iface, dock, module_qtbot)


def new_project(folder: Path, name: str, store: Path) -> None:
    """An empty project saved as ``folder/name.qgz`` whose label store is a copy of ``store``."""
    folder.mkdir(parents=True, exist_ok=True)
    QgsProject.instance().clear()
    shutil.copy(store, folder / f"{name}_slick_labels.gpkg")
    assert QgsProject.instance().write(str(folder / f"{name}.qgz"))


def idle(ui: Session) -> bool:
    """No engine command of the dock is queued or running (the browser's reads included)."""
    return not ui.dock._tasks


@dataclass
class FirstRun:
    folder: Path
    states: List[RunState]
    stages: List[str]
    result: Dict[str, object]
    items: int
    icons_ok: bool
    counts: str
    summary: str
    remembered: Dict[str, str]
    messages: List[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def first_run(session: Session, arctic_store, tmp_path_factory) -> FirstRun:
    """One press of Generate samples in a new project: trains the generator, adds five samples."""
    folder = tmp_path_factory.mktemp("first") / "arctic"
    new_project(folder, "arctic", arctic_store)
    panel = session.panel
    panel.count.setValue(FIRST_RUN)
    states: List[RunState] = []
    panel.run_controls.state_changed.connect(states.append)
    stages: List[str] = []

    def progressed(event, _text) -> None:
        if not stages or stages[-1] != event.stage:
            stages.append(event.stage)

    panel.run_controls.run_button.click()
    task = panel.task
    assert task is not None, session.iface.messages()
    task.progressed.connect(progressed)
    session.bot.waitUntil(lambda: panel.task is None, timeout=180_000)
    messages = session.iface.messages()  # before they time out
    panel.run_controls.state_changed.disconnect(states.append)
    assert task.result.ok, task.result.message
    session.bot.waitUntil(lambda: idle(session) and panel.browser.list.count() == FIRST_RUN, timeout=60_000)
    OUTPUT.mkdir(exist_ok=True)
    session.dock.widget().widget().grab().save(str(OUTPUT / "dock_with_samples.png"))
    project = QgsProject.instance()
    remembered = {"generator": sample_files.generator_path(project), "samples": sample_files.samples_folder(project)}
    assert project.write()
    items = [panel.browser.list.item(row) for row in range(panel.browser.list.count())]
    return FirstRun(folder=folder, states=states, stages=stages, result=dict(task.result.data),
                    items=len(items), icons_ok=all(not item.icon().isNull() for item in items),
                    counts=panel.browser.count_label.text(), summary=panel.summary.text(), remembered=remembered,
                    messages=messages)


@pytest.fixture
def ui(session: Session) -> Iterator[Session]:
    QgsProject.instance().clear()
    session.iface.bar.clearWidgets()
    session.panel.count.setValue(FIRST_RUN)
    yield session
    for task in list(session.dock._tasks):  # a failed test must not leave a run behind for the next
        task.cancel()
    session.bot.waitUntil(lambda: idle(session), timeout=30_000)


def copy_of_first_run(first_run: FirstRun, tmp_path: Path, ui: Session) -> Path:
    """The first run's project folder copied (its project uses relative paths), opened and shown."""
    folder = tmp_path / "arctic"
    shutil.copytree(first_run.folder, folder)
    assert QgsProject.instance().read(str(folder / "arctic.qgz"))
    ui.bot.waitUntil(lambda: ui.panel.browser.list.count() == FIRST_RUN and idle(ui), timeout=60_000)
    return folder


def test_one_press_trains_a_generator_then_generates_in_one_run(first_run: FirstRun) -> None:
    assert first_run.states == [RunState.STARTING, RunState.RUNNING, RunState.DONE]  # one visible run
    assert first_run.stages[:3] == ["tiles", "training (low res)", "training"] and "generating" in first_run.stages
    assert first_run.stages.index("generating") > first_run.stages.index("training")
    generator = first_run.folder / "arctic_slick_generator.safetensors"
    samples = first_run.folder / "arctic_slick_samples"
    assert generator.is_file() and first_run.result["folder"] == str(samples)
    assert first_run.remembered == {"generator": str(generator), "samples": str(samples)}
    index = read_index(samples)
    ids = [record["id"] for record in index["samples"]]
    assert len(ids) == FIRST_RUN and all(record["kept"] for record in index["samples"])
    for sample_id in ids:
        assert (samples / "tiles" / f"{sample_id}.npz").is_file()
        assert (samples / "previews" / f"{sample_id}.png").is_file()
    assert first_run.items == FIRST_RUN and first_run.icons_ok
    assert f"<b>{FIRST_RUN} kept</b> of {FIRST_RUN} samples" in first_run.counts
    assert "Generator trained from scratch on 576 tiles of 32 px" in first_run.summary
    assert "now holds 5 samples, 5 kept" in first_run.summary
    assert f"{FIRST_RUN} samples added with dpm++ in 3 steps" in first_run.summary
    assert f"{FIRST_RUN} samples added: {FIRST_RUN} kept of {FIRST_RUN}" in first_run.messages[0]


def test_discard_greys_a_sample_a_second_press_reuses_the_generator_and_a_third_retrains(
        first_run: FirstRun, ui: Session, qtbot, tmp_path: Path) -> None:
    folder = copy_of_first_run(first_run, tmp_path, ui)
    samples, generator = folder / "arctic_slick_samples", folder / "arctic_slick_generator.safetensors"
    browser = ui.panel.browser
    assert not browser.discard_button.isEnabled()  # nothing selected
    browser.list.item(1).setSelected(True)
    qtbot.mouseClick(browser.discard_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: "4 kept</b> of 5 samples, 1 discarded" in browser.count_label.text(), timeout=30_000)
    assert [record["kept"] for record in read_index(samples)["samples"]] == [True, False, True, True, True]
    item = browser.list.item(1)
    assert "discarded" in item.text() and item.foreground().color() == DISCARDED_TEXT
    assert "discarded" not in browser.list.item(0).text()
    assert "(4 kept)" in ui.dock.finetune_panel.use_generated.text()
    ui.panel.grab().save(str(OUTPUT / "generate_panel_discarded.png"))

    trained_at = generator.stat().st_mtime_ns
    stages: List[str] = []
    ui.panel.count.setValue(3)
    ui.panel.run_controls.run_button.click()
    ui.panel.task.progressed.connect(lambda event, _: stages.append(event.stage))
    qtbot.waitUntil(lambda: ui.panel.task is None, timeout=120_000)
    assert ui.panel.result.ok, ui.panel.result.message
    assert "generating" in stages and not [stage for stage in stages if stage.startswith("training")]
    assert generator.stat().st_mtime_ns == trained_at and len(list(folder.glob("*.safetensors"))) == 1
    assert [record["kept"] for record in read_index(samples)["samples"]] == [True, False] + [True] * 6
    qtbot.waitUntil(lambda: browser.list.count() == 8 and "7 kept</b> of 8 samples" in browser.count_label.text(),
                    timeout=30_000)
    assert "Generator trained from scratch" not in ui.panel.summary.text()

    ui.panel.retrain.setChecked(True)
    assert ui.panel.tile.isEnabled()
    ui.panel.tile.setValue(64)  # the folder holds 32-pixel samples: refused before any training
    ui.panel.run_controls.run_button.click()
    assert ui.panel.task is None and "holds 32-pixel samples; a generator of 64-pixel tiles" in ui.iface.messages()[0]
    ui.panel.tile.setValue(32)
    ui.panel.count.setValue(1)
    ui.panel.run_controls.run_button.click()
    qtbot.waitUntil(lambda: ui.panel.task is None, timeout=120_000)
    assert ui.panel.result.ok, ui.panel.result.message
    new = folder / "arctic_slick_generator-2.safetensors"
    assert new.is_file() and generator.stat().st_mtime_ns == trained_at  # the old one is kept
    assert sample_files.generator_path(QgsProject.instance()) == str(new)
    index = read_index(samples)
    assert len(index["generators"]) == 2 and len(index["samples"]) == 9
    assert not ui.panel.retrain.isChecked() and not ui.panel.tile.isEnabled()  # the next press reuses the new one


def test_cancel_during_training_leaves_no_generator(ui: Session, qtbot, arctic_store, tmp_path: Path) -> None:
    new_project(tmp_path, "cancel", arctic_store)
    with setting(settings.GENERATOR_LOW_RES_STEPS, 100_000):
        ui.panel.run_controls.run_button.click()
    task = ui.panel.task
    stages: List[str] = []
    task.progressed.connect(lambda event, _: stages.append(event.stage))
    qtbot.waitUntil(lambda: "training (low res)" in stages, timeout=60_000)
    qtbot.mouseClick(ui.panel.run_controls.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: ui.panel.task is None, timeout=15_000)
    assert task.result.status is Status.CANCELLED and len(task.results) == 1  # generate never started
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cancel.qgz", "cancel_slick_labels.gpkg"]
    assert "Cancelled during training; no generator file was written." in ui.panel.summary.text()
    assert "cancelled during training" in ui.iface.messages()[0]


def test_the_generator_kind_comes_from_the_engine_and_a_sar_jointnet_training_goes_on_after_a_cancel(
        ui: Session, qtbot, arctic_store, tmp_path: Path) -> None:
    panel = ui.panel
    assert [panel.kind.itemData(i) for i in range(panel.kind.count())] == list(contract.GENERATOR_KINDS)
    assert [panel.kind.itemText(i) for i in range(panel.kind.count())] == list(contract.GENERATOR_KINDS.values())
    new_project(tmp_path, "joint", arctic_store)
    assert panel.kind.isEnabled() and panel.kind.currentData() == "dakter"
    made = {}
    for kind in ("dakter", "sar-jointnet"):
        panel.kind.setCurrentIndex(panel.kind.findData(kind))
        train, _ = panel._parameters().commands()
        made[kind] = train_options(parse_args([train.name, *train.args]))  # what the engine makes of it
    dakter, joint = made["dakter"], made["sar-jointnet"]
    assert isinstance(dakter, GeneratorOptions) and (dakter.tile, dakter.steps) == (32, TINY[settings.GENERATOR_STEPS])
    assert isinstance(joint, JointNetOptions) and (joint.tile, joint.preset, joint.stage_steps) == (32, "cpu", None)
    # One press trains SAR-JointNet stage by stage; after Cancel the stages finished stay for the next press.
    panel.run_controls.run_button.click()
    task = panel.task
    stages: List[str] = []
    task.progressed.connect(lambda event, _: stages.append(event.stage))
    qtbot.waitUntil(lambda: "stage 1: SAR-Net" in stages, timeout=120_000)
    qtbot.mouseClick(panel.run_controls.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: panel.task is None, timeout=15_000)
    assert task.result.status is Status.CANCELLED and "no generator file was written" in panel.summary.text()
    generator = Path(sample_files.generator_path(QgsProject.instance()))
    assert not generator.exists() and (generator.parent / f"{generator.stem}.stages" / "stage1.pt").is_file()
    # A project whose generator exists uses it, whatever its kind.
    generator.write_bytes(b"a generator")
    panel.refresh()
    assert not panel.kind.isEnabled()
    panel.retrain.setChecked(True)
    assert panel.kind.isEnabled()
    panel.retrain.setChecked(False)
    panel.kind.setCurrentIndex(panel.kind.findData("dakter"))  # the session's panel goes on to DAKTer's tests


def test_a_kind_with_a_pretrained_generator_of_the_tile_size_says_so_and_is_fine_tuned_from_it(
        ui: Session, arctic_store, tmp_path: Path, monkeypatch) -> None:
    panel = ui.panel
    new_project(tmp_path, "pretrained", arctic_store)
    dakter, joint = contract.GENERATOR_KINDS.values()
    bundled = tmp_path / "generator_dakter_64.safetensors"
    for kind, path in (("dakter", bundled), ("sar-jointnet", tmp_path / "generator_sarjointnet_64.safetensors")):
        monkeypatch.setitem(plugin_contract.BUNDLED_GENERATORS, (kind, 64), path)  # stand-ins for the bundled files
    panel.tile.setValue(64)

    def titles() -> List[str]:
        return [panel.kind.itemText(i) for i in range(panel.kind.count())]

    def train_args() -> tuple:
        train, _ = panel._parameters().commands()
        return train.args

    assert titles() == [dakter, joint] and "--init" not in train_args()
    assert "trained from scratch on the labels when you generate" in panel.files_label.text()
    # A pretrained DAKTer generator of 64-pixel tiles where the engine looks for it (untrained weights will do).
    card = GeneratorCard("pretrained", ["water", "slick"], 64, 25.0, 0.5, unet_config("small", 64, 2))
    save_generator(build_unet(card), card, bundled)
    panel.refresh()
    assert titles() == [f"{dakter} (pretrained)", joint]
    panel.tile.setValue(32)
    assert titles() == [dakter, joint]  # none of 32-pixel tiles
    panel.tile.setValue(64)
    assert "fine-tuned from the pretrained generator_dakter_64.safetensors on the labels" in panel.files_label.text()
    args = train_args()
    assert args[args.index("--init") + 1] == str(bundled) and "--net" not in args and "--steps" not in args
    made = train_options(parse_args(["generator", *args]))  # what the engine makes of it
    assert (made.init, made.tile, made.net, made.steps, made.low_res_steps) == (bundled, 64, "small", 150, 0)
    panel.kind.setCurrentIndex(panel.kind.findData("sar-jointnet"))
    assert "--init" not in train_args() and "trained from scratch" in panel.files_label.text()
    bundled.unlink()
    panel.kind.setCurrentIndex(panel.kind.findData("dakter"))
    assert titles() == [dakter, joint] and "--init" not in train_args()
    panel.tile.setValue(32)  # the session's size, for the tests after


def test_cancel_during_generation_keeps_whole_samples_and_a_discard_made_meanwhile(
        first_run: FirstRun, ui: Session, qtbot, tmp_path: Path) -> None:
    folder = copy_of_first_run(first_run, tmp_path, ui)
    samples = folder / "arctic_slick_samples"
    browser = ui.panel.browser
    ui.panel.count.setValue(400)
    with setting(settings.SAMPLING_STEPS, 40):
        ui.panel.run_controls.run_button.click()
    task = ui.panel.task
    # new samples show up while the run goes on (the browser follows the folder)
    qtbot.waitUntil(lambda: browser.list.count() > FIRST_RUN, timeout=120_000)
    assert ui.panel.task is task
    first_new = browser.list.item(FIRST_RUN)
    first_new_id = first_new.data(Qt.UserRole)
    first_new.setSelected(True)
    qtbot.mouseClick(browser.discard_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: "discarded" in browser.list.item(FIRST_RUN).text(), timeout=60_000)
    at_discard = len(read_index(samples)["samples"])
    qtbot.waitUntil(lambda: len(read_index(samples)["samples"]) > at_discard, timeout=60_000)  # written after it
    assert ui.panel.task is task
    qtbot.mouseClick(ui.panel.run_controls.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: ui.panel.task is None, timeout=15_000)
    assert task.result.status is Status.CANCELLED
    records = read_index(samples)["samples"]
    assert FIRST_RUN + 4 < len(records) < FIRST_RUN + 400
    assert {r["id"]: r["kept"] for r in records if not r["kept"]} == {first_new_id: False}  # the discard stayed
    for record in records:  # only whole samples: both files of each, readable
        with np.load(samples / "tiles" / f"{record['id']}.npz") as data:
            assert data["tile"].shape == (32, 32) and data["logits"].shape == (2, 32, 32)
        assert (samples / "previews" / f"{record['id']}.png").is_file()
    assert len(list((samples / "tiles").iterdir())) == len(records)
    assert not list(samples.rglob(".slickmapper-tmp*"))
    assert "Cancelled during generation; the samples finished before were kept." in ui.panel.summary.text()
    qtbot.waitUntil(lambda: browser.list.count() == len(records) and idle(ui), timeout=30_000)
    assert f"<b>{len(records) - 1} kept</b> of {len(records)} samples" in browser.count_label.text()


def test_the_sample_folder_can_be_chosen_and_is_remembered_in_the_project(ui: Session, qtbot, arctic_store,
                                                                          tmp_path: Path) -> None:
    new_project(tmp_path, "chosen", arctic_store)
    project, panel = QgsProject.instance(), ui.panel
    default = str(tmp_path / "chosen_slick_samples")
    assert panel.folder.filePath() == default and panel.browser.folder == default
    assert "trained from scratch on the labels when you generate" in panel.files_label.text()
    panel.folder.setFilePath(str(tmp_path / "elsewhere"))
    qtbot.waitUntil(lambda: sample_files.samples_folder(project) == str(tmp_path / "elsewhere"), timeout=5_000)
    assert panel.browser.folder == str(tmp_path / "elsewhere") and "No samples yet" in panel.browser.count_label.text()
    assert project.write() and project.read(str(tmp_path / "chosen.qgz"))
    assert panel.folder.filePath() == str(tmp_path / "elsewhere")  # found again after a restart
    panel.folder.setFilePath("")
    qtbot.waitUntil(lambda: panel.folder.filePath() == default, timeout=5_000)
    assert sample_files.samples_folder(project) == default and not list(tmp_path.glob("elsewhere"))


def test_bad_input_says_what_is_wrong_and_writes_nothing(ui: Session, qtbot, few_store, tmp_path: Path) -> None:
    ui.panel.run_controls.run_button.click()  # an unsaved project without a store
    assert ui.panel.task is None and "This project has no label store yet" in ui.iface.messages()[0]
    assert "no label store yet" in ui.panel.browser.count_label.text()

    new_project(tmp_path, "few", few_store)
    before = sorted(tmp_path.iterdir())
    ui.panel.run_controls.run_button.click()
    qtbot.waitUntil(lambda: ui.panel.task is None, timeout=60_000)
    assert ui.panel.result.status is Status.FAILED
    message = ui.panel.result.message
    assert message.startswith("Only ") and "a generator needs at least 16" in message  # the engine's words
    assert "Mark more checked sea as reviewed" in message
    assert message.splitlines()[0] in ui.panel.summary.text()
    assert ui.iface.messages()[0].endswith(f"Generating samples failed: {message.splitlines()[0]}")
    assert sorted(tmp_path.iterdir()) == before


@needs_model
def test_generation_runs_niced_while_a_detection_runs_at_normal_priority(ui: Session, qtbot, arctic_store,
                                                                         module_dir: Path, tmp_path: Path) -> None:
    new_project(tmp_path, "both", arctic_store)
    layer = load_scene(module_dir / "sample_1.tif", ui.iface)
    ui.dock.layer_combo.setLayer(layer)
    ui.dock.tile.setValue(256)
    ui.dock.overlap.setValue(32)
    ui.dock.output_folder.setFilePath(str(tmp_path))
    qtbot.waitUntil(lambda: idle(ui), timeout=60_000)  # the scene has been read
    with setting(settings.GENERATOR_LOW_RES_STEPS, 100_000), setting(settings.GENERATION_PRIORITY, "low"):
        ui.panel.run_controls.run_button.click()
    generation = ui.panel.task
    qtbot.waitUntil(lambda: generation.pid is not None, timeout=30_000)  # niced before it runs any engine code
    ui.dock.detect()
    detection = ui.dock.detect_task
    assert detection is not None, ui.iface.messages()
    # The dock hears of the progress through a queued signal, a moment after the task has it.
    qtbot.waitUntil(lambda: detection.progress() > 0 and ui.dock.run_controls.state is RunState.RUNNING, timeout=60_000)
    assert ui.panel.task is generation and ui.panel.run_controls.state.active
    # every thread of the generation (torch's too, once started) and its session's autogroup; none of the detection's
    assert set(niceness(generation.pid)) == {LOW} and set(niceness(detection.pid)) == {OURS}
    assert (autogroup_nice(generation.pid), autogroup_nice(detection.pid)) == (LOW_PRIORITY_NICE, 0)
    for controls in (ui.dock.run_controls, ui.panel.run_controls):
        qtbot.mouseClick(controls.cancel_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: ui.panel.task is None and ui.dock.detect_task is None, timeout=15_000)
    assert generation.result.status is Status.CANCELLED and detection.result.status is Status.CANCELLED
    assert sorted(path.name for path in tmp_path.iterdir()) == ["both.qgz", "both_slick_labels.gpkg"]


def test_fine_tune_passes_the_generated_samples_it_is_asked_to_use(qgis_app, qtbot, tmp_path: Path) -> None:
    started: List[EngineCommand] = []
    pushed: List[str] = []
    store, folder = tmp_path / "labels.gpkg", tmp_path / "samples"
    store.touch()
    panel = FinetunePanel(lambda command, *args, **kwargs: started.append(command),
                          lambda level, text, details="": pushed.append(text),
                          lambda: {"path": str(tmp_path / "base.safetensors"), "name": "base"}, lambda: "cpu",
                          lambda: str(store), lambda: str(folder))
    qtbot.addWidget(panel)
    assert not panel.n_generated.isEnabled()
    panel.run()
    assert "--generated" not in started[-1].args
    panel.use_generated.setChecked(True)
    panel.n_generated.setValue(7)
    panel.run()
    assert len(started) == 1 and "no generated samples yet" in pushed[-1]  # the folder does not exist
    folder.mkdir()
    panel.run()
    args = started[-1].args
    assert args[args.index("--generated"):] == ("--generated", str(folder), "--n-generated", "7")
    assert args[args.index("--train-layers") + 1] == "all" and args[args.index("--use-on") + 1] == "labelled"  # the dock's defaults
    assert "--label-check" in args and "--no-label-check" not in args
    assert "--stay-close" not in args and "--parent-weight" not in args  # the engine's default pull
    panel.close_to_parent.setChecked(True)
    panel.run()
    assert "--stay-close" in started[-1].args and "--parent-weight" not in started[-1].args  # the engine picks the pull for the parent
    panel.close_to_parent.setChecked(False)
    panel.n_generated.setValue(0)  # the engine's default: as many as the training tiles
    panel.run()
    assert started[-1].args[-2:] == ("--generated", str(folder)) and "--n-generated" not in started[-1].args
    panel.samples_changed({"kept": 12, "total": 13, "tile_size": 64})
    assert panel.use_generated.text() == "Use generated samples (12 kept):"
    assert panel.tile.value() == 64 and args[args.index("--tile") + 1] == "128"  # the samples' size, once they are used
