"""The dock's Fine-tune section: teach the selected model the project's labels, watch it learn, compare.

The run is an engine command like detection (same worker, same cancel, same clean-up), writing a new
model file into the folder the engine lists models from, so the new model appears in the model list.
Generated samples the analyst kept (Generate samples section) can join the labelled tiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

from qgis.core import Qgis
from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtCore import Qt, pyqtSignal
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QPushButton, QSpinBox, QVBoxLayout, QWidget

from .commands import FinetuneParameters, finetuned_model_path, user_models_dir
from .contract import TRAIN_LAYERS
from .loss_chart import LossChart
from .rich_text import html_text
from .run_controls import RunControls
from .tasks import EngineTask
from .engine_runner import RunResult, Status

StartTask = Callable[..., EngineTask]
"""The dock's ``_start(command, description, on_done, cleanup=None, controls=None, on_log=None, then=(), on_metrics=None)``."""
Push = Callable[..., None]
"""The dock's ``_push(level, text, details="")``."""
"""Train-layers choice that lets the engine decide: all layers on a GPU, the decoder only on a CPU."""


class FinetunePanel(QgsCollapsibleGroupBox):
    """Runs ``finetune`` on the model selected in the dock and the project's label store."""

    model_created = pyqtSignal(str)
    """(path of the new model file) once it is written: the dock refreshes its model list."""
    detect_requested = pyqtSignal(str)
    """(path of the new model file): the analyst wants to see it at work on the map view."""
    changes_requested = pyqtSignal(str)
    """(path of the new model file): the analyst wants to see, on the map view, what it finds that its parent did not
    and what it no longer finds."""

    def __init__(self, start: StartTask, push: Push, model: Callable[[], Optional[Dict[str, Any]]],
                 device: Callable[[], str], store: Callable[[], str], samples: Callable[[], str],
                 parent: Optional[QWidget] = None) -> None:
        super().__init__("Fine-tune", parent)
        self._start = start
        self._push = push
        self._model = model
        self._device = device
        self._store = store
        self._samples = samples
        self.result: Optional[RunResult] = None
        self._build()
        self.model_changed()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.base_label = QLabel()
        self.base_label.setWordWrap(True)
        form = QFormLayout()
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 200)
        self.epochs.setValue(10)
        self.epochs.setToolTip("Epochs over every labelled tile; the last one's model is kept.")
        self.train_layers = QComboBox()
        self.train_layers.addItems(TRAIN_LAYERS)
        self.train_layers.setCurrentText("all")
        self.train_layers.setToolTip("all: the whole network, as measured best on real scenes. decoder: the encoder "
                                     "frozen, quicker on a CPU.")
        self.tile = QSpinBox()
        self.tile.setRange(64, 1024)
        self.tile.setSingleStep(32)
        self.tile.setValue(128)
        self.tile.setToolTip("Side of the training tiles in pixels (a multiple of 32). Smaller tiles make more of "
                             "them from a small reviewed area.")
        self.use_generated = QCheckBox("Use generated samples:")
        self.use_generated.setToolTip("Train on kept samples of the project's sample folder (Generate samples) besides "
                                      "the labelled tiles, as DAKTer's student. Discarded samples are never used.")
        self.n_generated = QSpinBox()
        self.n_generated.setRange(0, 100_000)
        self.n_generated.setSpecialValueText("automatic")
        self.n_generated.setSuffix(" samples")
        self.n_generated.setToolTip("How many kept samples to train on, the first ones of the folder. automatic: as "
                                    "many as there are labelled training tiles, as in the paper.")
        self.n_generated.setEnabled(False)
        self.use_generated.toggled.connect(self._use_generated)
        self._sample_tile = 0
        """Tile size of the project's samples (0: unknown): a student is trained at the size of its samples."""
        form.addRow("Epochs", self.epochs)
        form.addRow("Train layers", self.train_layers)
        form.addRow("Tile (px)", self.tile)
        form.addRow(self.use_generated, self.n_generated)
        self.labelled_only = _ticked("Use the new model on the labelled scenes only",
                                     "On every other scene, detection with the new model uses its parent's weights: a few labels "
                                     "make a model better on their own scene and often worse on others. Untick to use the new "
                                     "weights on every scene.")
        form.addRow(self.labelled_only)
        self.label_check = _ticked("Keep the parent's weights unless the new ones find the labelled slicks better",
                                   "After training, parent and new weights map the labelled tiles; where the new ones find the "
                                   "labelled slicks no better, the new model keeps the parent's. Untick to keep the new weights "
                                   "whatever they score, e.g. to see what the labels taught.")
        form.addRow(self.label_check)
        self.close_to_parent = QCheckBox("Stay close to the parent's weights")
        self.close_to_parent.setToolTip(
            "Fewer areas nobody labelled made worse, for a smaller gain. With the bundled U-Net + DeepLabV3 the new "
            "weights keep three quarters of the parent's instead of half: on real half-scenes none of 80 was made worse "
            "(2 of 20 by default), the mean gain 0.45 -> 0.50 against 0.54. With the light U-Net the pull toward the "
            "parent while training is ten times as strong: one run at a time, 1 of 80 worse against 5, the mean about "
            "the same. Off: the engine's default.")
        form.addRow(self.close_to_parent)
        self.run_controls = RunControls("Fine-tune")
        self.run_controls.run_button.setToolTip("Train a copy of the selected model on this project's labels. "
                                                "The selected model file is never changed.")
        self.run_controls.run_button.clicked.connect(self.run)
        self.chart = LossChart()
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.detect_button = QPushButton("Detect with the new model on the map view")
        self.detect_button.clicked.connect(self._detect_with_new_model)
        self.detect_button.setVisible(False)
        self.changes_button = QPushButton("Show what it changed on the map view")
        self.changes_button.setToolTip("Detect with the new model and with the model it was fine-tuned from, on the map "
                                       "view, and draw the slicks only one of them finds. On a scene you did not label, "
                                       "the new model hands detection to its parent, so there is nothing to compare.")
        self.changes_button.clicked.connect(self._show_changes)
        self.changes_button.setVisible(False)
        layout.addWidget(self.base_label)
        layout.addLayout(form)
        layout.addWidget(self.run_controls)
        layout.addWidget(self.chart)
        layout.addWidget(self.summary)
        layout.addWidget(self.detect_button)
        layout.addWidget(self.changes_button)

    def model_changed(self) -> None:
        """Follow the dock's model choice: it is the model that gets fine-tuned."""
        model = self._model()
        self.base_label.setText(f"Base model: <b>{html_text(str(model.get('name')))}</b> (the model chosen above)"
                                if model else "Base model: the model list has not loaded yet.")

    def _blocking_reason(self) -> str:
        model, store = self._model(), self._store()
        if not model or not model.get("path"):
            return ("The model list has not loaded, so there is no model to fine-tune. Click Check engine in the "
                    "Engine section to see what is wrong.")
        if not store or not Path(store).is_file():
            return ("This project has no label store yet. In Labels, click Start labeling, draw or accept slicks "
                    "and mark the areas you checked as reviewed; then fine-tune.")
        folder = self._samples()
        if self.use_generated.isChecked() and not (folder and Path(folder).is_dir()):
            return ("This project has no generated samples yet: generate some in Generate samples, or untick "
                    "Use generated samples.")
        return ""

    def samples_changed(self, summary: Dict[str, Any]) -> None:
        """Say how many kept samples the project's sample folder holds (the most a run can use)."""
        self.use_generated.setText(f"Use generated samples ({summary.get('kept', 0)} kept):")
        self._sample_tile = int(summary.get("tile_size") or 0)
        self._use_generated(self.use_generated.isChecked())

    def _use_generated(self, used: bool) -> None:
        """Fine-tune at the samples' tile size once they are used: the engine cuts the labelled tiles at that size."""
        self.n_generated.setEnabled(used)
        if used and self._sample_tile:
            self.tile.setValue(self._sample_tile)

    def run(self) -> None:
        """Start fine-tuning, or say what is missing."""
        if self.task is not None:
            return
        reason = self._blocking_reason()
        if reason:
            self._push(Qgis.Warning, reason)
            return
        base = str(self._model()["path"])
        params = FinetuneParameters(
            base=base, store=self._store(), out=str(finetuned_model_path(user_models_dir(), base)),
            epochs=self.epochs.value(), tile=self.tile.value(),
            train_layers=self.train_layers.currentText(), device=self._device(),
            generated=self._samples() if self.use_generated.isChecked() else "",
            n_generated=self.n_generated.value() if self.use_generated.isChecked() else 0,
            use_on="labelled" if self.labelled_only.isChecked() else "every", label_check=self.label_check.isChecked(),
            close_to_parent=self.close_to_parent.isChecked())
        self.chart.clear()
        self.result = None
        self.detect_button.setVisible(False)
        self.changes_button.setVisible(False)
        self.summary.setText("")
        self._start(params.command(), f"Slick Mapper: fine-tuning {Path(base).stem}", self._finished,
                    cleanup=params.remove_outputs, controls=self.run_controls, on_metrics=self.chart.add_metrics)

    @property
    def task(self) -> Optional[EngineTask]:
        """The running fine-tuning, if any: what Cancel stops."""
        return self.run_controls.task

    def _finished(self, result: RunResult) -> None:
        self.result = result
        if result.status is Status.CANCELLED:
            self.summary.setText("Cancelled; no model file was written.")
            self._push(Qgis.Info, "Fine-tuning cancelled; no model file was written.")
            return
        if not result.ok:
            self.summary.setText(f"<span style='color:#b00020'>{html_text(result.message)}</span>")
            self._push(Qgis.Critical, f"Fine-tuning failed: {result.message.splitlines()[0]}", result.message)
            return
        self._show_result(result.data)
        self.model_created.emit(str(result.data["model"]))
        name = Path(str(result.data["model"])).name
        if result.data.get("holds_parent_weights"):
            self._push(Qgis.Warning, f"New model {name} holds its parent's weights.", str(result.data.get("weights_note") or ""))
        else:
            self._push(Qgis.Success, f"New model {name}: trained on every labelled tile.")

    def _show_result(self, data: Dict[str, Any]) -> None:
        """What the run did, which threshold the new model uses, and on which scenes its weights detect."""
        runs = int(data.get("seeds_averaged") or 1)
        each = f" in each of {runs} runs" if runs > 1 else ""
        averaged = " (their weights averaged)" if runs > 1 else ""
        close = ", kept close to the parent's weights" if data.get("stay_close") else ""
        lines = [f"{data['epochs_run']} epochs{each} on all {data['train_tiles']} labelled tiles{averaged}, layers: {data['train_layers']}"
                 f"{close}, {float(data['seconds']):.0f} s on {data['device']}.", str(data.get("weights_note") or ""), str(data.get("threshold_note") or ""),
                 str(data.get("use_note") or ""), f"Saved as {data['model']}"]
        self.summary.setText("<br>".join(html_text(line) for line in lines if line))
        self.detect_button.setVisible(True)
        self.changes_button.setVisible(not data.get("holds_parent_weights"))  # the parent's own weights: nothing to compare

    def _detect_with_new_model(self) -> None:
        if self.result is not None and self.result.ok:
            self.detect_requested.emit(str(self.result.data["model"]))

    def _show_changes(self) -> None:
        if self.result is not None and self.result.ok:
            self.changes_requested.emit(str(self.result.data["model"]))


def _ticked(text: str, tip: str) -> QCheckBox:
    """A check box for an engine default that is on, which the analyst may turn off."""
    box = QCheckBox(text)
    box.setChecked(True)
    box.setToolTip(tip)
    return box
