"""The Slick Mapper dock: pick a SAR scene and a model, see what will happen, detect, get a styled group;
then label slicks, generate more labelled samples in the background, and fine-tune the model on them.

UI → ``DetectParameters`` → ``EngineTask``: the dock only gathers values, checks them with
``scene_check`` before anything starts, and adds layers when a task reports success. The Labels,
Generate samples and Fine-tune sections are their own widgets (``labels_panel``, ``generate_panel``,
``finetune_panel``) that run their engine commands through the dock's ``_start``, each long run behind
its own RunControls, so a detection can run while samples are generated.
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from qgis.core import (Qgis, QgsApplication, QgsCoordinateTransform, QgsMapLayer, QgsMapLayerProxyModel,
                       QgsProject, QgsRasterLayer)
from qgis.gui import QgsCollapsibleGroupBox, QgsDockWidget, QgsMapLayerComboBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QMessageBox, QPlainTextEdit,
                                 QPushButton, QRadioButton, QScrollArea, QToolButton, QVBoxLayout, QWidget)

from . import settings
from . import label_store
from .commands import (DOCTOR, MODELS, DetectParameters, info_command, measure_command, prepare_command, remove_model_command,
                       unique_prefix)
from .finetune_panel import FinetunePanel
from .generate_panel import GeneratePanel
from .labels_panel import LabelsPanel
from .layers import LayerError, add_result_group, open_results, summary
from .options_page import editor_value, make_editor
from .rich_text import html_text
from .run_controls import RunControls
from .scene_check import SceneFacts, issues
from .tasks import EngineTask, Step
from .engine_runner import EngineCommand, RunResult, Status

TITLE = "Slick Mapper"


class SlickMapperDock(QgsDockWidget):
    """The analyst's panel; ``shutdown()`` cancels its tasks before the plugin unloads."""

    def __init__(self, iface: Any, parent: Optional[QWidget] = None) -> None:
        super().__init__(TITLE, parent)
        self.setObjectName("SlickMapperDock")
        self._iface = iface
        self._project = QgsProject.instance()
        self._tasks: Set[EngineTask] = set()
        self._info_task: Optional[EngineTask] = None
        self._infos: Dict[Tuple[str, str], Tuple[Optional[Dict[str, Any]], str]] = {}
        """The engine's ``info`` per (scene, model file): its data, or its refusal."""
        self._measure_task: Optional[EngineTask] = None
        self._measuring = ""
        """The scene file ``_measure_task`` reads."""
        self._measured: Dict[str, Dict[str, Any]] = {}
        """The engine's ``measure`` per scene file: its eq. 1 statistics, kept by the engine for detection."""
        self._prepare_task: Optional[EngineTask] = None
        self._preparing: Tuple[str, str] = ("", "")
        """The (model file, device) ``_prepare_task`` prepares."""
        self._making = False
        """Whether ``_prepare_task`` has said it has something to make (a prepared model's look-up says nothing)."""
        self._prepared: Dict[Tuple[str, str], Dict[str, Any]] = {}
        """The engine's ``prepare`` per (model file, device): the runtime it runs on, or ``error``."""
        self._build()
        self._project.layersAdded.connect(self._refresh_scenes)
        self._project.layersRemoved.connect(self._refresh_scenes)
        self._iface.mapCanvas().currentLayerChanged.connect(self._follow_active_layer)
        self._refresh_scenes()
        self._follow_active_layer(self._iface.activeLayer())
        # The combo box chose its scene while being built, before anything listened: look that one up too.
        self._scene_changed(self.layer_combo.currentLayer())
        self._start(MODELS, "Slick Mapper: listing models", self._models_listed)

    # ---- building the panel -------------------------------------------------------------------------

    def _build(self) -> None:
        body = QWidget()
        layout = QVBoxLayout(body)

        scene_box = QGroupBox("Scene")
        scene_layout = QVBoxLayout(scene_box)
        self.layer_combo = QgsMapLayerComboBox()
        self.layer_combo.setFilters(QgsMapLayerProxyModel.RasterLayer)
        self.layer_combo.setAllowEmptyLayer(False)
        self.layer_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.layer_combo.layerChanged.connect(self._scene_changed)
        self.active_note = QLabel()
        self.active_note.setWordWrap(True)
        self.active_note.setVisible(False)
        self.scene_info = QLabel()
        self.scene_info.setWordWrap(True)
        self.scene_info.setTextInteractionFlags(Qt.TextSelectableByMouse)
        scene_layout.addWidget(self.layer_combo)
        scene_layout.addWidget(self.active_note)
        scene_layout.addWidget(self.scene_info)
        layout.addWidget(scene_box)

        model_box = QGroupBox("Model and run")
        form = QFormLayout(model_box)
        self.model_combo = QComboBox()
        self.model_combo.setSizeAdjustPolicy(QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(12)
        self.model_combo.addItem("Engine default (listing models…)", None)
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self.remove_model_button = QToolButton()
        self.remove_model_button.setText("Remove…")
        self.remove_model_button.clicked.connect(self.remove_model)
        model_row = QHBoxLayout()
        model_row.addWidget(self.model_combo, 1)
        model_row.addWidget(self.remove_model_button)
        self.model_details = QLabel()
        self.model_details.setWordWrap(True)
        self.runtime_note = QLabel()
        self.runtime_note.setWordWrap(True)
        self.runtime_note.setToolTip("What runs the model on this machine: the fastest runtime and precision measured here whose "
                                     "slick masks agree with PyTorch's own on real tiles. Measured once per machine and network "
                                     "(a fine-tuned model takes its parent's) and kept in your cache folder.")
        self.device = make_editor(settings.DEVICE)
        self.device.currentIndexChanged.connect(self._prepare)
        self.tile = make_editor(settings.TILE)
        self.overlap = make_editor(settings.OVERLAP)
        self.threshold = make_editor(settings.THRESHOLD)
        self.min_area = make_editor(settings.MIN_AREA)
        self.mirror = make_editor(settings.MIRROR)
        self.against_parent = QCheckBox("Show what fine-tuning changed")
        self.whole_scene = QRadioButton("Whole scene")
        self.map_view = QRadioButton("Current map view")
        self.whole_scene.setChecked(True)
        extent_row = QVBoxLayout()
        extent_row.addWidget(self.whole_scene)
        extent_row.addWidget(self.map_view)
        self.output_folder = make_editor(settings.OUTPUT_FOLDER)
        self.output_folder.lineEdit().setPlaceholderText("Next to the scene")
        form.addRow("Model", model_row)
        form.addRow("", self.model_details)
        form.addRow("", self.runtime_note)
        form.addRow(settings.DEVICE.label, self.device)
        form.addRow(settings.TILE.label, self.tile)
        form.addRow(settings.OVERLAP.label, self.overlap)
        form.addRow(settings.THRESHOLD.label, self.threshold)
        form.addRow(settings.MIN_AREA.label, self.min_area)
        form.addRow(settings.MIRROR.label, self.mirror)
        form.addRow("", self.against_parent)
        form.addRow("Extent", extent_row)
        form.addRow(settings.OUTPUT_FOLDER.label, self.output_folder)
        layout.addWidget(model_box)

        self.run_controls = RunControls("Detect slicks")
        self.run_controls.run_button.setDefault(True)
        self.run_controls.run_button.clicked.connect(self.detect)
        layout.addWidget(self.run_controls)

        self.labels_panel = LabelsPanel(self._iface, self._project, self._start, self._push,
                                        self.layer_combo.currentLayer)
        self.generate_panel = GeneratePanel(self._project, self._start, self._push,
                                            lambda: str(editor_value(self.device)))
        self.finetune_panel = FinetunePanel(self._start, self._push, self._current_model,
                                            lambda: str(editor_value(self.device)),
                                            lambda: label_store.store_path(self._project),
                                            self.generate_panel.sample_folder)
        self.finetune_panel.model_created.connect(lambda _: self.refresh_models())
        self.finetune_panel.detect_requested.connect(self.detect_with_model)
        self.finetune_panel.changes_requested.connect(partial(self.detect_with_model, against_parent=True))
        self.generate_panel.browser.changed.connect(self.finetune_panel.samples_changed)
        layout.addWidget(self.labels_panel)
        layout.addWidget(self.generate_panel)
        layout.addWidget(self.finetune_panel)

        engine_box = QgsCollapsibleGroupBox("Engine")
        engine_layout = QVBoxLayout(engine_box)
        engine_row = QHBoxLayout()
        self.check_button = QPushButton("Check engine")
        self.check_button.clicked.connect(self.check_engine)
        engine_row.addWidget(self.check_button)
        engine_row.addStretch(1)
        self.engine_status = QLabel(f"Engine Python: {settings.engine_runner().python}")
        self.engine_status.setWordWrap(True)
        self.engine_status.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(500)
        self.log.setFixedHeight(110)
        self.log.setPlaceholderText("Engine messages appear here.")
        engine_layout.addLayout(engine_row)
        engine_layout.addWidget(self.engine_status)
        engine_layout.addWidget(self.log)
        layout.addWidget(engine_box)
        layout.addStretch(1)

        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.NoFrame)
        scroll.setWidget(body)
        # QGIS opens a dock at its own width (about 300 px): without this, the panel's right edge hides
        # behind a horizontal scroll bar until the analyst widens it.
        scroll.setMinimumWidth(body.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width())
        self.setWidget(scroll)

    # ---- tasks ---------------------------------------------------------------------------------------

    def _start(self, command: EngineCommand, description: str, on_done: Any, cleanup: Any = None,
               controls: Optional[RunControls] = None,
               on_log: Optional[Callable[[str], None]] = None, then: Sequence[Step] = (),
               on_metrics: Optional[Callable[[Dict[str, Any]], None]] = None) -> EngineTask:
        """Queue ``command`` (and the commands ``then`` that follow it) as an EngineTask whose result goes to
        ``on_done`` on the main thread.

        ``controls`` (shown for long runs only; scene and model look-ups are too quick to show) and
        ``on_log`` and ``on_metrics`` are connected before the task is queued, so no early line is missed; ``controls``
        hears of the end before ``on_done``, so ``on_done`` may start the next run at once.
        """
        task = EngineTask(description, settings.engine_runner(), command, cleanup, then)
        task.logged.connect(self._append_log)
        if on_log is not None:
            task.logged.connect(on_log)
        if on_metrics is not None:
            task.measured.connect(on_metrics)
        if controls is not None:
            controls.follow(task)
        task.done.connect(partial(self._task_done, task, on_done))
        self._tasks.add(task)
        QgsApplication.taskManager().addTask(task)
        return task

    def _task_done(self, task: EngineTask, on_done: Any, result: RunResult) -> None:
        self._tasks.discard(task)
        on_done(result)

    def shutdown(self) -> None:
        """Cancel running tasks and stop listening to them and to the project: the plugin is unloading."""
        self._project.layersAdded.disconnect(self._refresh_scenes)
        self._project.layersRemoved.disconnect(self._refresh_scenes)
        self._iface.mapCanvas().currentLayerChanged.disconnect(self._follow_active_layer)
        self.layer_combo.layerChanged.disconnect(self._scene_changed)  # a closing project would start look-ups
        self.labels_panel.shutdown()
        self.generate_panel.shutdown()
        for task in list(self._tasks):
            for signal in (task.done, task.logged, task.progressed):
                try:
                    signal.disconnect()
                except TypeError:  # PyQt's answer for a signal nothing listens to (a look-up's progress)
                    pass
            task.cancel()
        self._tasks.clear()

    def _append_log(self, line: str) -> None:
        self.log.appendPlainText(line)

    def _push(self, level: Qgis.MessageLevel, text: str, details: str = "") -> None:
        bar = self._iface.messageBar()
        duration = 0 if level == Qgis.Critical else 10
        if details and details != text:
            bar.pushMessage(TITLE, text, details, level, duration)
        else:
            bar.pushMessage(TITLE, text, level, duration)

    # ---- engine and models ---------------------------------------------------------------------------

    def check_engine(self) -> None:
        """Run ``doctor`` and show what the worker sees (Python, torch, device, GPU)."""
        self.check_button.setEnabled(False)
        self.engine_status.setText("Checking the engine…")
        self._start(DOCTOR, "Slick Mapper: checking the engine", self._engine_checked)

    def _engine_checked(self, result: RunResult) -> None:
        self.check_button.setEnabled(True)
        if not result.ok:
            self.engine_status.setText(f"<span style='color:#b00020'>{html_text(result.message)}</span>")
            self._push(Qgis.Critical, result.message.splitlines()[0], result.message)
            return
        data = result.data
        gpu = f" ({data.get('gpu_name')}, {data.get('gpu_memory_gb')} GB)" if data.get("gpu_name") else ""
        text = (f"Engine {data.get('engine_version')} · torch {data.get('torch_version')} · "
                f"device {data.get('device')}{gpu}\nPython {data.get('python')}\nModels: {data.get('models_dir')}")
        self.engine_status.setText(html_text(text))
        self._push(Qgis.Success, f"Engine ready: torch {data.get('torch_version')} on {data.get('device')}{gpu}.")

    def refresh_models(self, select: str = "", then: Optional[Callable[[], None]] = None) -> None:
        """List the models again (a new one was written); select ``select``, else keep the current one."""
        self._start(MODELS, "Slick Mapper: listing models", partial(self._models_listed, select=select, then=then))

    def _models_listed(self, result: RunResult, select: str = "", then: Optional[Callable[[], None]] = None) -> None:
        current = self._current_model() or {}
        wanted = select or str(current.get("path") or "") or settings.DEFAULT_MODEL.value()
        wanted = str(Path(wanted).resolve()) if wanted else ""
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        models: List[Dict[str, Any]] = list(result.data.get("models") or []) if result.ok else []
        for model in models:
            self.model_combo.addItem(self._model_title(model), model)
            tip = "\n".join(filter(None, (self._model_text(model), self._model_provenance(model))))
            self.model_combo.setItemData(self.model_combo.count() - 1, tip, Qt.ToolTipRole)
        if not models:
            self.model_combo.addItem("Engine default", None)
            if not result.ok:
                self.engine_status.setText(f"<span style='color:#b00020'>{html_text(result.message)}</span>")
        paths = [str(Path(model["path"]).resolve()) if model.get("path") else "" for model in models]
        defaults = [index for index, model in enumerate(models) if model.get("default")]
        self.model_combo.setCurrentIndex(paths.index(wanted) if wanted in paths else (defaults or [0])[0])
        self.model_combo.blockSignals(False)
        self._model_changed()
        if then is not None:
            then()

    def remove_model(self) -> None:
        """Delete the chosen fine-tuned model once the analyst confirms; the engine refuses a bundled model and one that
        another model was fine-tuned from, and says why. Its parent is chosen next: the model the analyst came from."""
        model = self._current_model() or {}
        if not model.get("removable"):
            return
        answer = QMessageBox.question(self, "Remove model", f"Delete {model.get('name')}?\n\nIts file {model.get('path')} is deleted; "
                                      "maps already made with it stay.", QMessageBox.Yes | QMessageBox.No, QMessageBox.No)
        if answer != QMessageBox.Yes:
            return
        parent = str(((model.get("lineage") or {}).get("parent") or {}).get("path") or "")
        self._start(remove_model_command(str(model["path"])), "Slick Mapper: removing a model",
                    partial(self._model_removed, str(model.get("name")), parent))

    def _model_removed(self, name: str, parent: str, result: RunResult) -> None:
        if not result.ok:
            self._push(Qgis.Warning, f"{name} was not removed: {result.message.splitlines()[0]}", result.message)
            return
        self._push(Qgis.Info, f"Removed {name}.")
        self.refresh_models(select=parent)

    @staticmethod
    def _model_title(model: Dict[str, Any]) -> str:
        return (f"{model.get('name')} – {model.get('architecture')}, {model.get('pixel_size') or '?'} m, "
                f"{model.get('polarisation') or '?'}")

    @staticmethod
    def _model_text(model: Dict[str, Any]) -> str:
        dice_text = model.get("measured") or "Dice not measured"
        smallest = f", slicks from {float(model['min_area_km2']):g} km²" if model.get("min_area_km2") is not None else ""
        return (f"{model.get('network')}, tiles {model.get('tile_size')} px, "
                f"{model.get('mode') or ''} {model.get('polarisation') or ''}{smallest}. {dice_text}.")

    @staticmethod
    def _model_provenance(model: Dict[str, Any]) -> str:
        """How the model was made, for its tooltip: long (the command line, the machine), rarely read."""
        provenance = model.get("provenance") or ""
        if isinstance(provenance, dict):
            provenance = "\n".join(f"{key}: {value}" for key, value in provenance.items()
                                    if isinstance(value, (str, int, float)))
        return str(provenance)

    def _current_model(self) -> Optional[Dict[str, Any]]:
        return self.model_combo.currentData()

    def _model_path(self) -> str:
        """The chosen model's file; empty for the engine's bundled default."""
        return str((self._current_model() or {}).get("path") or "")

    def _model_changed(self) -> None:
        model = self._current_model()
        self.model_details.setText(self._model_text(model) if model else "The engine's bundled model.")
        self.model_details.setToolTip(self._model_provenance(model) if model else "")
        removable = bool((model or {}).get("removable"))
        self.remove_model_button.setEnabled(removable)
        self.remove_model_button.setToolTip("Delete this fine-tuned model's file (maps already made with it stay)." if removable else
                                            "Only models made by Fine-tune can be removed; bundled models ship with Slick Mapper.")
        fine_tuned = bool(((model or {}).get("lineage") or {}).get("parent"))
        self.against_parent.setEnabled(fine_tuned)
        self.against_parent.setChecked(self.against_parent.isChecked() and fine_tuned)
        self.against_parent.setToolTip(
            "Detect with the model's parent too, on the same extent, and draw the slicks only one of them finds: "
            "green where fine-tuning found a new slick, red dashes where it lost one of the parent's. The parent's "
            "files are written beside the new model's." if fine_tuned else
            "Only for a model made by Fine-tune: it compares the model's map with its parent's.")
        self.finetune_panel.model_changed()
        self._prepare()
        self._scene_changed(self.layer_combo.currentLayer())

    def _prepare(self) -> None:
        """Have the engine make now what this model's first detection on this machine would make before its first
        tile (the runtime measured fastest here, the export, the int8 model: a first detection with the bundled model
        took 67-74 s without them, 4.6-4.8 s with them, docs/benchmarks_amd_first_detection.md), while the analyst looks
        at the scene. A detection started meanwhile waits for it instead of repeating it; a model already prepared
        costs a look-up that imports no PyTorch and says nothing."""
        key = (self._model_path(), str(editor_value(self.device)))
        if key not in self._prepared and self._preparing != key:
            if self._prepare_task is not None:
                self._prepare_task.cancel()  # the cores go to the model now chosen
            self._preparing, self._making = key, False
            self._prepare_task = self._start(prepare_command(*key), "Slick Mapper: preparing the model",
                                             partial(self._prepare_read, key), on_log=partial(self._prepare_heard, key))
        self._show_runtime()

    @property
    def preparing(self) -> bool:
        """Whether the engine is still making the chosen model ready (a detection pressed now waits for it)."""
        return self._prepare_task is not None

    def _prepare_heard(self, key: Tuple[str, str], line: str) -> None:
        """The engine speaks only when it has something to make: from then on the dock says it is preparing."""
        if self._preparing == key and not self._making:
            self._making = True
            self._show_runtime()

    def _prepare_read(self, key: Tuple[str, str], result: RunResult) -> None:
        if self._preparing == key:
            self._prepare_task, self._preparing = None, ("", "")
        if result.status is not Status.CANCELLED:
            self._prepared[key] = result.data if result.ok else {"error": result.message}
        self._show_runtime()

    def _show_runtime(self) -> None:
        key = (self._model_path(), str(editor_value(self.device)))
        prepared = self._prepared.get(key)
        if prepared is None:
            making = self._preparing == key and self._making
            text = "<i>Preparing this model for this machine (once; a minute or so)…</i>" if making else ""
        elif "error" in prepared:
            text = (f"<span style='color:#b06000'>⚠ Not prepared ahead: {html_text(prepared['error'].splitlines()[0])} "
                    "The first detection tries again.</span>")
        else:
            once = f", prepared here in {float(prepared.get('seconds') or 0):.0f} s (once)" if prepared.get("made") else ""
            text = f"Runs on {html_text(str(prepared.get('runtime')))}{once}."
        self.runtime_note.setText(text)

    # ---- scene ---------------------------------------------------------------------------------------

    def _refresh_scenes(self) -> None:
        """Keep only SAR-looking rasters in the scene list (no RGB photos, no web tiles)."""
        others = [layer for layer in self._project.mapLayers().values()
                  if isinstance(layer, QgsRasterLayer) and not SceneFacts.from_layer(layer).looks_like_sar]
        self.layer_combo.setExceptedLayerList(others)
        self._show_scene()

    def _follow_active_layer(self, layer: Optional[QgsMapLayer]) -> None:
        """Preselect the active layer when it is a scene; say why when it is a raster but not one."""
        self.active_note.setVisible(False)
        if not isinstance(layer, QgsRasterLayer):
            return
        facts = SceneFacts.from_layer(layer)
        if facts.looks_like_sar:
            self.layer_combo.setLayer(layer)
        else:
            self.active_note.setText(f"<span style='color:#b06000'>{html_text(facts.why_not_sar())}</span>")
            self.active_note.setVisible(True)

    def _scene_changed(self, layer: Optional[QgsMapLayer]) -> None:
        path = SceneFacts.from_layer(layer).path if isinstance(layer, QgsRasterLayer) else ""
        key = (path, self._model_path())
        known = self._infos.get(key, (None, ""))[0] is not None  # a failed look-up is tried again
        if path and not known and Path(path).exists():
            if self._info_task is not None:
                self._info_task.cancel()
            self._info_task = self._start(info_command(*key), f"Slick Mapper: reading {Path(path).name}",
                                          partial(self._info_read, key))
        elif known:
            self._measure(path, self._infos[key][0])
        self._show_scene()
        self.labels_panel.refresh()

    def _info_read(self, key: Tuple[str, str], result: RunResult) -> None:
        self._info_task = None
        if result.status is Status.CANCELLED:
            return
        self._infos[key] = (result.data, "") if result.ok else (None, result.message)
        if result.ok:
            self._measure(key[0], result.data)
        self._show_scene()

    def _measure(self, path: str, info: Dict[str, Any]) -> None:
        """Have the engine read the whole scene for its eq. 1 statistics now, while the analyst looks at it, rather
        than at the start of the first detection (8.7 s of a 14.4 s map view on an EW-size scene). A detection
        started meanwhile waits for this measurement instead of repeating it."""
        if path in self._measured or not info.get("needs_statistics", True) or not Path(path).exists():
            return
        if self._measure_task is not None:
            if self._measuring == path:
                return
            self._measure_task.cancel()  # the cores go to the scene now chosen
        self._measuring = path
        self._measure_task = self._start(measure_command(path), f"Slick Mapper: measuring {Path(path).name}",
                                         partial(self._measure_read, path))

    def _measure_read(self, path: str, result: RunResult) -> None:
        if self._measuring == path:
            self._measure_task, self._measuring = None, ""
        if result.ok:
            self._measured[path] = result.data
            self._show_scene()

    def _scene_issues(self, layer: QgsRasterLayer) -> Tuple[SceneFacts, Optional[Dict[str, Any]], list]:
        facts = SceneFacts.from_layer(layer)
        info, info_error = self._infos.get((facts.path, self._model_path()), (None, ""))
        return facts, info, issues(facts, info, info_error)

    def _show_scene(self) -> None:
        """Show what the engine found about the scene and everything that will go wrong."""
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer):
            self.scene_info.setText("Add a Sentinel-1 scene (GeoTIFF, COG or VRT) to the project.")
            return
        facts, info, found = self._scene_issues(layer)
        lines = []
        if info:
            crs = str(info.get("crs") or "")
            if len(crs) > 40:
                crs = layer.crs().authid() or crs[:40] + "…"
            if info.get("has_gcps") and not crs:
                crs = f"ground control points → {info.get('utm_crs')}"
            pixel = f"{info['pixel_size']:.1f} m" if info.get("pixel_size") else "unknown"
            lines += [f"<b>CRS</b> {html_text(crs or 'none')} · <b>pixel</b> {pixel} · "
                      f"{info.get('width')}×{info.get('height')} px",
                      f"<b>band</b> {info.get('band')} ({info.get('polarisation') or 'polarisation unknown'}) · "
                      f"<b>values</b> {info.get('value_scale')} · "
                      f"<b>valid</b> {100 * float(info.get('valid_fraction') or 0):.0f} %"]
            if info.get("plan"):
                lines.append(f"<i>{html_text(str(info['plan']))}</i>")
            measured = self._measured.get(facts.path, {})
            if "mean_db" in measured:
                lines.append(f"<b>eq. 1</b> {measured['low_db']:.1f} to {measured['high_db']:.1f} dB (mean "
                             f"{measured['mean_db']:.1f} dB, σ {measured['std_db']:.1f} dB, from every valid pixel)")
            elif self._measuring == facts.path:
                lines.append("<i>Measuring the scene for eq. 1, so that detection starts at once…</i>")
        elif (facts.path, self._model_path()) not in self._infos and Path(facts.path).exists():
            lines.append("<i>Reading the scene…</i>")
        for issue in found:
            colour = "#b00020" if issue.blocking else "#b06000"
            lines.append(f"<span style='color:{colour}'>{'✖' if issue.blocking else '⚠'} {html_text(issue.text)}</span>")
        self.scene_info.setText("<br>".join(lines))

    # ---- detection -----------------------------------------------------------------------------------

    def _no_scene_reason(self) -> str:
        if self.active_note.isVisible():
            return SceneFacts.from_layer(self._iface.activeLayer()).why_not_sar()
        return "There is no SAR scene in the project: add a Sentinel-1 GeoTIFF, COG or VRT first."

    def _bounds(self, layer: QgsRasterLayer) -> Tuple[Optional[Tuple[float, float, float, float]], str, str]:
        """The map view as (bounds, CRS) when that extent is chosen, or an error text."""
        if not self.map_view.isChecked():
            return None, "", ""
        canvas = self._iface.mapCanvas()
        crs = canvas.mapSettings().destinationCrs()
        view = canvas.extent()
        scene = QgsCoordinateTransform(layer.crs(), crs, self._project).transformBoundingBox(layer.extent())
        if view.isEmpty() or not view.intersects(scene):
            return None, "", "The map view does not overlap the scene: pan to it, or choose Whole scene."
        bounds = (view.xMinimum(), view.yMinimum(), view.xMaximum(), view.yMaximum())
        return bounds, crs.authid() or crs.toWkt(), ""

    def detect(self) -> None:
        """Check everything that can be checked, then start the detection task (or say what is wrong)."""
        if self.detect_task is not None:
            return
        layer = self.layer_combo.currentLayer()
        if not isinstance(layer, QgsRasterLayer):
            self._push(Qgis.Warning, self._no_scene_reason())
            return
        facts, _, found = self._scene_issues(layer)
        blocking = [issue.text for issue in found if issue.blocking]
        out_dir = str(editor_value(self.output_folder)) or str(Path(facts.path).parent)
        if not blocking and not (os.path.isdir(out_dir) and os.access(out_dir, os.W_OK)):
            blocking.append(f"Results cannot be written to {out_dir}. Choose an output folder you can write to.")
        bounds, bounds_crs, extent_error = self._bounds(layer) if not blocking else (None, "", "")
        if extent_error:
            blocking.append(extent_error)
        if blocking:
            self._show_scene()
            self._push(Qgis.Critical, blocking[0])
            return
        model = self._current_model() or {}
        model_path = str(model.get("path") or "")
        model_name = str(model.get("name") or "default")
        params = DetectParameters(
            scene=facts.path, out_dir=out_dir,
            prefix=unique_prefix(out_dir, facts.path, Path(model_path).stem if model_path else "default"),
            model=model_path, device=str(editor_value(self.device)),
            tile=int(editor_value(self.tile)), overlap=int(editor_value(self.overlap)),
            threshold=float(editor_value(self.threshold)), min_area_km2=float(editor_value(self.min_area)),
            bounds=bounds, bounds_crs=bounds_crs,
            mirror=bool(editor_value(self.mirror)),
            against_parent=self.against_parent.isEnabled() and self.against_parent.isChecked())
        for setting, editor in ((settings.DEVICE, self.device), (settings.TILE, self.tile),
                                (settings.OVERLAP, self.overlap), (settings.THRESHOLD, self.threshold),
                                (settings.MIN_AREA, self.min_area), (settings.MIRROR, self.mirror),
                                (settings.OUTPUT_FOLDER, self.output_folder)):
            setting.set_value(editor_value(editor))
        self.log.clear()
        self._start(params.command(), f"Slick Mapper: detecting slicks in {layer.name()}",
                    partial(self._detected, layer.id(), layer.name(), model_name, params),
                    cleanup=params.remove_outputs, controls=self.run_controls)

    @property
    def detect_task(self) -> Optional[EngineTask]:
        """The running detection, if any: what Cancel stops."""
        return self.run_controls.task

    def _detected(self, scene_id: str, scene_name: str, model_name: str, params: DetectParameters,
                  result: RunResult) -> None:
        if result.status is Status.CANCELLED:
            self._push(Qgis.Info, "Detection cancelled; nothing was written.")
            return
        if not result.ok:
            self._append_log(result.message)
            self._push(Qgis.Critical, f"Detection failed: {result.message.splitlines()[0]}", result.message)
            return
        try:
            layers = open_results(result.data)
        except LayerError as error:
            params.remove_outputs()
            self._push(Qgis.Critical, str(error))
            return
        add_result_group(self._project, self._project.mapLayer(scene_id), scene_name,
                         str(result.data.get("model_name") or model_name), layers)
        self.labels_panel.show_uncertain(layers[-1], result.data.get("uncertain_blocks") or [])
        self._push(Qgis.Success, f"{scene_name}: {summary(result.data)}")
        for warning in result.data.get("warnings") or ():
            self._push(Qgis.Warning, str(warning))

    def detect_with_model(self, path: str, against_parent: bool = False) -> None:
        """List the models again, select the one at ``path`` and detect with it in the map view (and with its parent,
        showing what changed, when ``against_parent``)."""
        self.refresh_models(select=path, then=partial(self._detect_selected, path, against_parent))

    def _detect_selected(self, path: str, against_parent: bool) -> None:
        selected = str((self._current_model() or {}).get("path") or "")
        if not selected or Path(selected).resolve() != Path(path).resolve():
            self._push(Qgis.Warning, f"The model {Path(path).name} is not in the engine's model list, so it cannot be "
                                     f"selected. Check that it is still in {Path(path).parent}.")
            return
        self.map_view.setChecked(True)
        self.against_parent.setChecked(against_parent and self.against_parent.isEnabled())
        self.detect()
