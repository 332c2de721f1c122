"""Loading, unloading and the options page: what QGIS does with the plugin before any detection."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import partial

from qgis.core import QgsApplication, QgsSettings
from qgis.PyQt.QtCore import QCoreApplication, QEvent, Qt
from qgis.PyQt.QtWidgets import QDockWidget

from engine.models.registry import DEFAULT_MODEL, read_card
from slick_plugin import classFactory, settings
from slick_plugin.commands import DetectParameters

from .conftest import OUTPUT, REPO, add_scene, load_scene


def test_plugin_loads_and_unloads_cleanly(iface, qtbot) -> None:
    registry = QgsApplication.processingRegistry()
    plugin = classFactory(iface)
    plugin.initGui()
    assert iface.toolbar_actions == [plugin.action]
    assert iface.menu_actions == [("&Slick Mapper", plugin.action)]
    assert len(iface.options_factories) == 1
    assert registry.algorithmById("slickmapper:detect") is not None
    assert registry.algorithmById("slickmapper:sceneinfo") is not None
    assert not plugin.action.icon().isNull()

    plugin.action.trigger()
    assert plugin.dock.isVisible() and iface.docks == [plugin.dock]
    qtbot.waitUntil(lambda: not plugin.dock._tasks, timeout=60_000)
    plugin.unload()
    QCoreApplication.sendPostedEvents(None, QEvent.DeferredDelete)

    assert iface.toolbar_actions == [] and iface.menu_actions == [] and iface.docks == []
    assert iface.options_factories == []
    assert registry.providerById("slickmapper") is None
    assert iface.window.findChildren(QDockWidget) == []


def load_and_unload(iface) -> None:
    """What QGIS does on start and on quit: the settings of an earlier plugin are brought up to date on load."""
    loaded = classFactory(iface)
    loaded.initGui()
    loaded.unload()


def test_an_earlier_plugin_s_stored_tile_default_is_dropped_once_and_a_choice_kept(iface) -> None:
    """Plugins before settings version 2 stored the dock's tile default, 512, on every detection: loading this one
    drops it (the model's own again), keeps another size, and keeps a 512 chosen since; a version that is no number (edited
    by hand) is read as the first."""
    stored = QgsSettings()
    load = partial(load_and_unload, iface)
    try:
        for before, after, version in ((512, 0, None), (256, 256, None), (512, 0, "two")):
            settings.TILE.set_value(before)
            stored.remove(settings.VERSION_KEY)
            if version is not None:  # a version key edited by hand reads as the first one
                stored.setValue(settings.VERSION_KEY, version)
            load()
            assert settings.TILE.value() == after and int(stored.value(settings.VERSION_KEY)) == settings.SETTINGS_VERSION
        settings.TILE.set_value(512)
        load()
        assert settings.TILE.value() == 512
    finally:
        settings.TILE.set_value(settings.TILE.default)


def test_an_earlier_plugin_s_stored_smallest_slick_default_is_dropped_once_and_a_choice_kept(iface) -> None:
    """Plugins before settings version 3 stored the dock's smallest slick, 0.05 km², on every detection, and 0 meant every
    patch: loading this one drops both (the model's own now), keeps another area, and keeps a 0.05 chosen since; a tile
    of 512 chosen under version 2 stays too."""
    stored = QgsSettings()
    load = partial(load_and_unload, iface)
    try:
        for before, after in ((0.05, 0.0), (0.0, 0.0), (0.2, 0.2)):
            stored.setValue(settings.MIN_AREA.key, before)  # as an earlier plugin stored it, its default included
            settings.TILE.set_value(512)
            stored.setValue(settings.VERSION_KEY, 2)
            load()
            assert settings.MIN_AREA.value() == after and not (after == 0 and stored.contains(settings.MIN_AREA.key))
            assert settings.TILE.value() == 512 and int(stored.value(settings.VERSION_KEY)) == settings.SETTINGS_VERSION
        settings.MIN_AREA.set_value(0.05)
        load()
        assert settings.MIN_AREA.value() == 0.05
    finally:
        settings.MIN_AREA.set_value(settings.MIN_AREA.default)
        settings.TILE.set_value(settings.TILE.default)


def test_options_page_is_generated_from_the_declarations(plugin, iface) -> None:
    page = iface.options_factories[0].createWidget()
    assert set(page.editors) == {setting.name for setting in settings.ALL}
    for name in ("threshold", "tile", "min_area_km2"):  # the defaults leave them to the model
        assert page.editors[name].value() == 0 and page.editors[name].text() == "Model's own"
    page.editors["tile"].setValue(256)
    page.editors["device"].setCurrentText("cpu")
    page.apply()
    stored = QgsSettings()
    try:
        assert settings.TILE.value() == 256 and settings.DEVICE.value() == "cpu"
        assert stored.contains(settings.TILE.key) and not stored.contains(settings.THRESHOLD.key)  # a default is not stored
    finally:
        settings.TILE.set_value(settings.TILE.default)
        settings.DEVICE.set_value(settings.DEVICE.default)
    assert not stored.contains(settings.TILE.key) and not stored.contains(settings.DEVICE.key)
    assert page.editors["mirror_averaging"].isChecked()  # on by default, as in the engine
    page.editors["mirror_averaging"].setChecked(False)
    page.apply()
    try:  # stored as QSettings' "false", read back as a boolean, not as the non-empty string "false"
        assert settings.MIRROR.value() is False
        settings.MIRROR.set_value(True)
        assert settings.MIRROR.value() is True
    finally:
        settings.MIRROR.set_value(settings.MIRROR.default)


def test_detection_passes_a_threshold_a_tile_size_and_a_smallest_slick_only_when_set() -> None:
    own = DetectParameters(scene="s.tif", out_dir="out", prefix="p").command()
    given = DetectParameters(scene="s.tif", out_dir="out", prefix="p", threshold=0.35, tile=256, min_area_km2=0.2).command()
    assert "--threshold" not in own.args and "--tile" not in own.args and "--min-area-km2" not in own.args
    assert given.args[given.args.index("--threshold") + 1] == "0.35" and given.args[given.args.index("--tile") + 1] == "256"
    assert given.args[given.args.index("--min-area-km2") + 1] == "0.2"
    assert "--tta" in own.args and "--no-tta" not in own.args
    assert "--no-tta" in DetectParameters(scene="s.tif", out_dir="out", prefix="p", mirror=False).command().args


def test_the_plugin_never_imports_torch_or_the_engine() -> None:
    code = ("import sys; sys.path.insert(0, '.');"
            "import slick_plugin.plugin, slick_plugin.algorithms.detect;"
            "bad = [name for name in ('torch', 'engine', 'rasterio') if name in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_a_dock_opened_over_a_loaded_scene_reads_it_and_fits_its_width(plugin, iface, qtbot, tmp_path) -> None:
    # The analyst loads a scene first, then opens the dock: its scene facts must arrive all the same.
    add_scene(tmp_path, iface)
    plugin.action.trigger()
    dock = plugin.dock
    qtbot.waitUntil(lambda: not dock._tasks, timeout=60_000)
    assert "EPSG:32636" in dock.scene_info.text() and "25.0 m" in dock.scene_info.text()
    assert "Reading the scene" not in dock.scene_info.text()
    assert "eq. 1</b>" not in dock.scene_info.text()  # an 8-bit tile is stretched already: nothing to measure
    # The bundled model's line says what its Dice was measured on, so it never reads as a test score.
    assert re.search(r"Dice 0\.\d\d on its validation bands", dock.model_details.text()), dock.model_details.text()
    card = read_card(DEFAULT_MODEL)  # the engine's words, and the smallest slick "Model's own" stands for
    assert dock.model_details.text().startswith(f"{card.network}, tiles 512 px, EW HH, slicks from {card.min_area_km2:g} km². "), \
        dock.model_details.text()
    # Opened at QGIS's narrow default, the panel still shows its whole width, without a horizontal scroll bar.
    dock.resize(200, 600)
    QCoreApplication.processEvents()
    scroll = dock.widget()
    assert scroll.viewport().width() >= scroll.widget().minimumSizeHint().width()


def test_a_chosen_scene_is_measured_for_eq_1_before_any_detection(plugin, iface, qtbot, tmp_path, monkeypatch) -> None:
    # Reading a whole calibrated scene for its eq. 1 statistics is done as soon as the scene is chosen, and kept
    # by the engine: a detection that follows reads none of it again.
    from engine.data.synth import SceneSpec, write_scene
    from engine.scenes import normalise
    from engine.progress import silent
    import rasterio

    path = write_scene(SceneSpec(height=700, width=600, seed=7), tmp_path / "calibrated.tif")
    plugin.action.trigger()
    dock = plugin.dock
    load_scene(path, iface)
    qtbot.waitUntil(lambda: not dock._tasks, timeout=60_000)
    text = dock.scene_info.text()
    dock.grab().save(str(OUTPUT / "dock_measured_scene.png"))

    def unread(*args, **kwargs):
        raise AssertionError("the scene was read again for statistics the dock had measured")

    monkeypatch.setattr(normalise, "_measured_stretch", unread)
    with rasterio.open(path) as ds:
        kept = normalise.scene_stretch(ds, 1, "float32_linear", silent())
    low, high = kept.mean - 2 * kept.std, kept.mean + 2 * kept.std
    assert f"eq. 1</b> {low:.1f} to {high:.1f} dB (mean {kept.mean:.1f} dB" in text, text


def test_an_8_bit_scene_is_not_measured_as_the_engine_says_it_needs_no_statistics(plugin, iface, qtbot, tmp_path) -> None:
    from engine.data.synth import SceneSpec, write_scene

    path = write_scene(SceneSpec(height=300, width=300, seed=7), tmp_path / "grey.tif", encoding="uint8")
    plugin.action.trigger()
    dock = plugin.dock
    load_scene(path, iface)
    qtbot.waitUntil(lambda: not dock._tasks and any(key[0] == str(path) for key in dock._infos), timeout=60_000)
    info = next(value[0] for key, value in dock._infos.items() if key[0] == str(path))
    assert info["needs_statistics"] is False
    assert str(path) not in dock._measured and dock._measure_task is None


def test_the_dock_prepares_the_chosen_model_for_this_machine_in_the_background(plugin, qtbot, monkeypatch, tmp_path,
                                                                               model_factory) -> None:
    """With ``auto`` (the analyst's default; the suite forces PyTorch), a model not yet measured on this machine is
    prepared as soon as the dock shows it, not at the start of its first detection; shown again, it costs nothing."""
    from engine.models import runtimes

    monkeypatch.setenv("SLICK_MAPPER_RUNTIME", "auto")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("SLICK_MAPPER_MODELS", str(tmp_path / "models"))
    model = model_factory(tmp_path / "models" / "small.safetensors", tile_size=128)
    before = settings.DEFAULT_MODEL.value()
    settings.DEFAULT_MODEL.set_value(str(model))
    try:
        plugin.action.trigger()
        dock = plugin.dock
        qtbot.waitUntil(lambda: "Preparing this model for this machine" in dock.runtime_note.text(), timeout=60_000)
        assert dock.preparing
        qtbot.waitUntil(lambda: not dock.preparing, timeout=300_000)
    finally:
        settings.DEFAULT_MODEL.set_value(before)
    dock.grab().save(str(OUTPUT / "dock_prepared_model.png"))
    prepared = dock._prepared[(str(model.resolve()), dock.device.currentText())]
    assert prepared["made"] == "measure which runtime is fastest here"
    assert runtimes.readiness(model, prepared["device"]) == (prepared["runtime"], "")
    assert re.fullmatch(rf"Runs on {prepared['runtime']}, prepared here in \d+ s \(once\)\.", dock.runtime_note.text())
    dock._prepared.clear()  # as a dock opened again would
    dock._prepare()
    assert dock.runtime_note.text() == ""  # nothing said before the engine says there is something to make
    qtbot.waitUntil(lambda: not dock.preparing, timeout=60_000)
    assert not dock._making and dock.runtime_note.text() == f"Runs on {prepared['runtime']}."
    other = "cpu" if dock.device.currentText() != "cpu" else "auto"
    dock.device.setCurrentText(other)  # another device is another question for the engine
    qtbot.waitUntil(lambda: not dock.preparing and (str(model.resolve()), other) in dock._prepared, timeout=60_000)
    assert dock._prepared[(str(model.resolve()), other)]["runtime"] == prepared["runtime"]


def test_check_engine_shows_what_the_worker_sees(dock, iface, qtbot) -> None:
    qtbot.mouseClick(dock.check_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: dock.check_button.isEnabled(), timeout=60_000)
    assert "torch" in dock.engine_status.text() and "device" in dock.engine_status.text()
    assert "Engine ready" in iface.messages()[0]


def test_a_missing_engine_python_says_which_command_fixes_it(dock, iface, qtbot, tmp_path) -> None:
    settings.ENGINE_PYTHON.set_value(str(tmp_path / "venv" / "bin" / "python"))
    try:
        qtbot.mouseClick(dock.check_button, Qt.LeftButton)
        qtbot.waitUntil(lambda: dock.check_button.isEnabled(), timeout=10_000)
    finally:
        settings.ENGINE_PYTHON.set_value("")
    assert "cannot be started" in iface.messages()[0]
    assert f"cd {REPO} &amp;&amp; make venv" in dock.engine_status.text()  # shown as rich text
