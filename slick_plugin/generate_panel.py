"""The dock's Generate samples section: a generator trained on the project's labels makes new labelled
tiles in the background, and the analyst keeps or discards them while labelling and detecting go on.

One press is one run: ``generator train`` when the project has no generator yet (or a new one is asked
for), fine-tuned from the pretrained generator of its kind and tile size where the engine bundles one
(``bundled_generator``; the kind's name says "(pretrained)") and from scratch elsewhere, then ``generate``, chained in one EngineTask behind its own RunControls, so Cancel stops whichever
is running and a detection has controls of its own. Both run at low CPU priority (``low_priority``
commands; the options page can make it normal): the analyst's QGIS and detections come first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

from qgis.core import Qgis, QgsProject
from qgis.gui import QgsCollapsibleGroupBox, QgsFileWidget
from qgis.PyQt.QtCore import Qt, QTimer
from qgis.PyQt.QtWidgets import QCheckBox, QComboBox, QFormLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from . import label_store, sample_files, settings
from .commands import GenerateParameters, free_path
from .contract import GENERATOR_KINDS, SOLVER_STEPS, SOLVER_TITLES, bundled_generator
from .progress_text import ProgressEvent
from .rich_text import html_text
from .run_controls import RunControls
from .sample_browser import SampleBrowser
from .tasks import EngineTask, Step
from .engine_runner import RunResult, Status

StartTask = Callable[..., EngineTask]
"""The dock's ``_start(command, description, on_done, cleanup=None, controls=None, on_log=None, then=())``."""
Push = Callable[..., None]
"""The dock's ``_push(level, text, details="")``."""
"""DPM-Solver++ comes first: it makes samples like DDIM's in a tenth of the network passes, which on a CPU is
the difference between minutes and hours for a hundred samples."""
FOLDER_TYPED_MS = 800


class GeneratePanel(QgsCollapsibleGroupBox):
    """Trains (or reuses) the project's generator and adds samples to its sample folder, with a browser."""

    def __init__(self, project: QgsProject, start: StartTask, push: Push, device: Callable[[], str],
                 parent: Optional[QWidget] = None) -> None:
        super().__init__("Generate samples", parent)
        self._project = project
        self._start = start
        self._push = push
        self._device = device
        self._params: Optional[GenerateParameters] = None
        self._task: Optional[EngineTask] = None
        self._store = ""
        """The label store the panel shows, to tell a project change from a save."""
        self.result: Optional[RunResult] = None
        self._build()
        for signal in self._project_signals():
            signal.connect(self.refresh)
        self.refresh()

    def _project_signals(self) -> tuple:
        return (self._project.readProject, self._project.cleared, self._project.projectSaved)

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.files_label = QLabel()
        self.files_label.setWordWrap(True)
        self.files_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        form = QFormLayout()
        self.count = QSpinBox()
        self.count.setRange(1, 100_000)
        self.count.setValue(50)
        self.count.setToolTip("Samples added to the folder by one run; samples already there are kept.")
        self.solver = QComboBox()
        for solver in SOLVER_STEPS:
            self.solver.addItem(f"{SOLVER_TITLES[solver]}, {SOLVER_STEPS[solver]} steps", solver)
        self.solver.setToolTip("DPM-Solver++ makes samples like DDIM's (the paper's solver) about ten times faster.")
        self.tile = QSpinBox()
        self.tile.setRange(32, 512)
        self.tile.setSingleStep(32)
        self.tile.setValue(64)
        self.tile.valueChanged.connect(self._show_files)
        self.kind = QComboBox()
        for kind, title in GENERATOR_KINDS.items():
            self.kind.addItem(title, kind)
        self.kind.currentIndexChanged.connect(self._show_files)
        self.retrain = QCheckBox("Retrain the generator")
        self.retrain.setToolTip("Train a new generator on the labels as they are now (e.g. after adding many), "
                                "then generate with it. The old generator file is kept.")
        self.retrain.toggled.connect(self._show_files)
        self.folder = QgsFileWidget()
        self.folder.setStorageMode(QgsFileWidget.GetDirectory)
        self.folder.setToolTip("Where samples are added. One folder holds samples of one tile size.")
        self.folder.fileChanged.connect(lambda _: self._folder_typed.start())
        self._folder_typed = QTimer(self)
        """Acts on the folder field once typing has paused, not on every keystroke."""
        self._folder_typed.setSingleShot(True)
        self._folder_typed.setInterval(FOLDER_TYPED_MS)
        self._folder_typed.timeout.connect(self._folder_chosen)
        form.addRow("Samples", self.count)
        form.addRow("Solver", self.solver)
        form.addRow("Tile (px)", self.tile)
        form.addRow("Generator", self.kind)
        form.addRow("", self.retrain)
        form.addRow("Sample folder", self.folder)
        self.run_controls = RunControls("Generate samples")
        self.run_controls.run_button.setToolTip("Train a generator on this project's labels if it has none, then "
                                                "generate samples in the background at low priority.")
        self.run_controls.run_button.clicked.connect(self.run)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.browser = SampleBrowser(self._start, self._push)
        layout.addWidget(self.files_label)
        layout.addLayout(form)
        layout.addWidget(self.run_controls)
        layout.addWidget(self.summary)
        layout.addWidget(self.browser)

    def shutdown(self) -> None:
        """Stop listening to the project and the sample folder: the plugin is unloading."""
        for signal in self._project_signals():
            signal.disconnect(self.refresh)
        self.browser.shutdown()

    # ---- state ---------------------------------------------------------------------------------------

    @property
    def task(self) -> Optional[EngineTask]:
        """The running training and generation, if any: what Cancel stops."""
        return self.run_controls.task

    def sample_folder(self) -> str:
        return sample_files.samples_folder(self._project)

    def refresh(self, *_: object) -> None:
        """Follow the project: its generator, its sample folder and what the folder holds."""
        store = label_store.store_path(self._project)
        if store != self._store and self.task is None:
            self._show_outcome("")  # a run's outcome in another project
        self._store = store
        self._folder_typed.stop()
        self.folder.blockSignals(True)
        self.folder.setFilePath(self.sample_folder())
        self.folder.blockSignals(False)
        self._show_files()
        self.browser.show_folder(self.sample_folder())

    def _folder_chosen(self) -> None:
        """Remember the folder the analyst picked; an emptied field goes back to the one beside the store."""
        path = self.folder.filePath()
        if path:
            sample_files.remember_samples(self._project, path)
        else:
            sample_files.forget_samples(self._project)
            self.refresh()
        self.browser.show_folder(self.sample_folder())

    def _will_train(self) -> bool:
        generator = sample_files.generator_path(self._project)
        return self.retrain.isChecked() or not (generator and Path(generator).exists())

    def _pretrained(self) -> str:
        """The pretrained generator a new one of the chosen kind and tile size starts from; empty: none."""
        found = bundled_generator(str(self.kind.currentData()), self.tile.value())
        return str(found) if found else ""

    def _show_files(self, *_: object) -> None:
        for i in range(self.kind.count()):
            kind = self.kind.itemData(i)
            pretrained = bundled_generator(kind, self.tile.value()) is not None
            self.kind.setItemText(i, GENERATOR_KINDS[kind] + (" (pretrained)" if pretrained else ""))
        how = (f"fine-tuned from the pretrained {Path(self._pretrained()).name} on the labels" if self._pretrained()
               else "trained from scratch on the labels")
        generator = sample_files.generator_path(self._project)
        if not generator:
            text = "Generator: none yet. Start labeling first: the generator learns from the project's label store."
        elif not Path(generator).exists():
            text = f"Generator: {html_text(generator)} ({how} when you generate)"
        elif self.retrain.isChecked():
            text = (f"Generator: {html_text(generator)}, replaced in this project by a new one {how} as they are now "
                    "(the old file is kept)")
        else:
            text = f"Generator: {html_text(generator)}"
        self.files_label.setText(text)
        training = self._will_train()
        self.tile.setEnabled(training)
        self.tile.setToolTip("Side of the tiles the generator is trained on and makes." if training
                             else "Fixed by the generator already trained; tick Retrain to train one of another size.")
        self.kind.setEnabled(training)
        self.kind.setToolTip("The network of a new generator: DAKTer's one joint U-Net, or SAR-JointNet's SAR-Net and "
                             "Label-Net, joined and trained in three stages (sea, slick and look-alike labels). A kind "
                             "marked (pretrained) starts from a generator pretrained on real SAR at this tile size and is "
                             "fine-tuned on the labels (the engine's fine-tuning steps); the others train from scratch."
                             if training else "The generator already trained is used, whatever its kind; tick Retrain to train another.")

    # ---- the run -------------------------------------------------------------------------------------

    def _blocking_reason(self, params: GenerateParameters) -> str:
        if not params.store or not Path(params.store).is_file():
            return ("This project has no label store yet. In Labels, click Start labeling, label slicks and mark the "
                    "areas you checked as reviewed; the generator learns from them.")
        held = self.browser.summary
        if params.train and held and int(held["tile_size"]) != params.tile:
            return (f"{params.folder} holds {held['tile_size']}-pixel samples; a generator of {params.tile}-pixel "
                    f"tiles needs a sample folder of its own. Choose a new sample folder, or set the tile size to "
                    f"{held['tile_size']}.")
        return ""

    def _parameters(self) -> GenerateParameters:
        generator = sample_files.generator_path(self._project)
        train = self._will_train()
        retrain = train and bool(generator) and Path(generator).exists()
        if retrain:
            generator = str(free_path(Path(generator)))
        return GenerateParameters(
            store=label_store.store_path(self._project), generator=generator, folder=self.sample_folder(),
            n=self.count.value(), train=train, tile=self.tile.value(), kind=str(self.kind.currentData()),
            init=self._pretrained() if train else "", net=settings.GENERATOR_NET.value(),
            train_steps=settings.GENERATOR_STEPS.value(), low_res_steps=settings.GENERATOR_LOW_RES_STEPS.value(),
            solver=str(self.solver.currentData()), solver_steps=settings.SAMPLING_STEPS.value(),
            device=self._device(), mix_generators=retrain,
            low_priority=settings.GENERATION_PRIORITY.value() == "low")

    def run(self) -> None:
        """Train if needed, then generate; or say what is missing, before anything is written."""
        if self.task is not None:
            return
        params = self._parameters()
        reason = self._blocking_reason(params)
        if reason:
            self._push(Qgis.Warning, reason)
            return
        self._params, self.result = params, None
        self._show_outcome("")
        self.browser.show_folder(params.folder)
        self.browser.follow(True)
        first, *then = params.commands()
        cleanups = ([params.remove_generator] if params.train else []) + [params.remove_partial_samples]
        what = "training a sample generator, then generating" if params.train else "generating"
        self._task = self._start(first, f"Slick Mapper: {what} {params.n} samples", self._finished,
                                 cleanup=cleanups[0], controls=self.run_controls,
                                 then=[Step(command, cleanup) for command, cleanup in zip(then, cleanups[1:])])
        self._task.progressed.connect(self._progressed)

    def _progressed(self, event: ProgressEvent, _: str) -> None:
        if event.stage == "generating":
            self.browser.notice()  # the engine has created the folder by now

    def _finished(self, result: RunResult) -> None:
        params, task = self._params, self._task
        self._task = None
        self.result = result
        if params is None or task is None:
            return
        trained = params.train and bool(task.results) and task.results[0].ok
        if label_store.store_path(self._project) == params.store:  # else another project was opened meanwhile
            if trained:
                sample_files.remember_generator(self._project, params.generator)
                self.retrain.setChecked(False)
            sample_files.remember_samples(self._project, params.folder)
        self._show_files()
        self.browser.follow(False)
        self.browser.refresh()
        lines = [self._trained_text(task.results[0].data)] if trained else []
        if result.ok:
            lines.append(self._generated_text(result.data))
            self._push(Qgis.Success, f"{result.data['generated']} samples added: {result.data['kept']} kept of "
                                     f"{result.data['total']} in {Path(params.folder).name}.")
        elif result.status is Status.CANCELLED:
            stopped = "generation" if trained or not params.train else "training"
            kept = ("no generator file was written" if stopped == "training"
                    else "the samples finished before were kept")
            lines.append(f"Cancelled during {stopped}; {kept}.")
            self._push(Qgis.Info, f"Sample generation cancelled during {stopped}; {kept}.")
        else:
            lines.append(f"<span style='color:#b00020'>{html_text(result.message)}</span>")
            self._push(Qgis.Critical, f"Generating samples failed: {result.message.splitlines()[0]}", result.message)
        self._show_outcome("<br>".join(line if line.startswith("<span") else html_text(line) for line in lines))

    def _show_outcome(self, html: str) -> None:
        self.summary.setText(html)
        self.summary.setVisible(bool(html))

    @staticmethod
    def _trained_text(data: Dict[str, Any]) -> str:
        parent = data.get("initialised_from")
        how = f"fine-tuned from {parent['file']}" if parent else "trained from scratch"
        return (f"Generator {how} on {data['train_tiles']} tiles of {data['tile']} px in "
                f"{float(data['seconds']):.0f} s on {data['device']} (b = {float(data['b']):.2f}): {data['generator']}")

    @staticmethod
    def _generated_text(data: Dict[str, Any]) -> str:
        return (f"{data['generated']} samples added with {data['solver']} in {data['steps']} steps, "
                f"{float(data['seconds']):.0f} s on {data['device']} ({float(data['samples_per_minute']):.1f} per "
                f"minute). The folder now holds {data['total']} samples, {data['kept']} kept.")
