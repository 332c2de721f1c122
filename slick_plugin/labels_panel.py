"""The dock's Labels section: open the project's label store, draw, accept, review, count, export, and
see where labelling would help the model most.

Every write to the store goes through ``label_store`` (QGIS edits, saved at once) or through the engine
worker (creating the store, exporting a mask), so this module is only buttons and messages.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

from qgis.core import (Qgis, QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsMapLayer, QgsProject,
                       QgsRasterLayer, QgsRectangle)
from qgis.gui import QgsCollapsibleGroupBox
from qgis.PyQt.QtCore import Qt
from qgis.PyQt.QtWidgets import (QFileDialog, QGridLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                                 QVBoxLayout, QWidget)

from . import label_store
from .commands import label_export_command, label_store_init_command
from .label_store import LabelingError, StoreLayers
from .rich_text import html_text
from .scene_check import scene_path
from .tasks import EngineTask
from .engine_runner import RunResult, Status

StartTask = Callable[..., EngineTask]
"""The dock's ``_start(command, description, on_done, cleanup=None, ...)``."""
Push = Callable[..., None]
"""The dock's ``_push(level, text, details="")``."""
ZOOM_MARGIN = 0.1
"""Share of a block added around it when zooming, so its edges stay in view."""


class LabelsPanel(QgsCollapsibleGroupBox):
    """Labels for the scene picked in the dock, in the store the current project remembers."""

    def __init__(self, iface: Any, project: QgsProject, start: StartTask, push: Push,
                 scene: Callable[[], Optional[QgsMapLayer]], parent: Optional[QWidget] = None) -> None:
        super().__init__("Labels", parent)
        self._iface = iface
        self._project = project
        self._start = start
        self._push = push
        self._scene = scene
        self._creating: Optional[EngineTask] = None
        self._build()
        self._project.readProject.connect(self.refresh)
        self._project.cleared.connect(self.refresh)
        self._project.layersRemoved.connect(self.refresh)
        self._project.projectSaved.connect(self.refresh)  # saving names the store
        self.refresh()

    def _build(self) -> None:
        layout = QVBoxLayout(self)
        self.store_label = QLabel()
        self.store_label.setWordWrap(True)
        self.store_label.setTextInteractionFlags(Qt.TextSelectableByMouse)
        self.start_button = QPushButton("Start labeling")
        self.start_button.setToolTip("Open this project's label store, make its labels layer editable and start "
                                     "drawing a polygon with QGIS's Add Polygon Feature tool.")
        self.start_button.clicked.connect(self.start_labeling)
        self.accept_button = QPushButton("Accept as slick")
        self.accept_button.setToolTip("Copy the predicted slicks selected on the map into the labels, as slicks.")
        self.accept_button.clicked.connect(partial(self.copy_selected, "slick"))
        self.reject_button = QPushButton("Reject: look-alike")
        self.reject_button.setToolTip("Copy the predicted slicks selected on the map into the labels, as look-alikes.")
        self.reject_button.clicked.connect(partial(self.copy_selected, "lookalike"))
        self.reviewed_button = QPushButton("Mark view reviewed")
        self.reviewed_button.setToolTip("Every slick in the map view is labelled: the rest of it is clean sea.")
        self.reviewed_button.clicked.connect(self.mark_reviewed)
        self.export_button = QPushButton("Export mask…")
        self.export_button.setToolTip("Write this scene's slick labels as a mask: 0/255 PNG with a world file, "
                                      "or a GeoTIFF.")
        self.export_button.clicked.connect(self.export_mask)
        self.counts_label = QLabel()
        self.counts_label.setWordWrap(True)
        buttons = QGridLayout()
        buttons.addWidget(self.start_button, 0, 0, 1, 2)
        buttons.addWidget(self.accept_button, 1, 0)
        buttons.addWidget(self.reject_button, 1, 1)
        buttons.addWidget(self.reviewed_button, 2, 0)
        buttons.addWidget(self.export_button, 2, 1)
        self.next_label = QLabel("<b>Where to label next</b>: run a detection to rank its blocks by how unsure "
                                 "the model is.")
        self.next_label.setWordWrap(True)
        self.next_list = QListWidget()
        self.next_list.setMaximumHeight(150)
        self.next_list.setVisible(False)
        self.next_list.setToolTip("Blocks whose probabilities sit closest to the threshold. Click one to zoom to it.")
        self.next_list.itemClicked.connect(self.zoom_to)
        self.next_list.itemActivated.connect(self.zoom_to)
        layout.addWidget(self.store_label)
        layout.addLayout(buttons)
        layout.addWidget(self.counts_label)
        layout.addWidget(self.next_label)
        layout.addWidget(self.next_list)

    def shutdown(self) -> None:
        """Stop listening to the project and saving the store's layers: the plugin is unloading."""
        self._project.readProject.disconnect(self.refresh)
        self._project.cleared.disconnect(self.refresh)
        self._project.layersRemoved.disconnect(self.refresh)
        self._project.projectSaved.disconnect(self.refresh)  # saving names the store
        layers = self._layers()
        if layers is not None:
            for layer in (layers.labels, layers.reviewed):
                label_store.AutoCommit.detach(layer)

    # ---- state ---------------------------------------------------------------------------------------

    def _scene_path(self) -> str:
        layer = self._scene()
        return scene_path(layer) if isinstance(layer, QgsRasterLayer) else ""

    def _layers(self) -> Optional[StoreLayers]:
        """The store's layers when they are in the project (Start labeling puts them there)."""
        path = label_store.store_path(self._project)
        return StoreLayers.find(self._project, path) if path else None

    def refresh(self, *_: object) -> None:
        """Show the store, what it holds for the scene, and enable what can be done now.

        Also points the layers' scene default at the dock's scene, so a polygon is always filed under
        the scene the analyst sees in the Scene list, even in a project saved while labelling another.
        """
        path = label_store.store_path(self._project)
        scene = self._scene_path()
        layers = self._layers()
        if not path:
            store_text = "Label store: none yet. Start labeling asks where to keep this (unsaved) project's labels."
        else:
            state = "" if Path(path).exists() else " (created when you start labeling)"
            store_text = f"Label store: {path}{state}"
        self.store_label.setText(store_text)
        if layers is not None and scene:
            label_store.configure(layers, scene)
        self.counts_label.setText(self._counts_text(path, scene, layers))
        self.start_button.setEnabled(self._creating is None)
        for button in (self.accept_button, self.reject_button, self.reviewed_button):
            button.setEnabled(layers is not None and bool(scene))
        self.export_button.setEnabled(bool(path) and Path(path).exists() and bool(scene))

    def _counts_text(self, path: str, scene: str, layers: Optional[StoreLayers]) -> str:
        if not scene:
            return "Pick a scene in the Scene list to label it."
        if layers is None and path and Path(path).exists():
            try:
                layers = StoreLayers.open(path)  # counted, not loaded: Start labeling loads it
            except LabelingError as error:
                return f"<span style='color:#b00020'>{html_text(str(error))}</span>"
        if layers is None:
            return f"No labels on <b>{html_text(Path(scene).name)}</b> yet: <i>Start labeling</i> to draw some."
        return f"<b>{html_text(Path(scene).name)}</b>: {label_store.counts(self._project, layers, scene).text()}"

    # ---- the store -----------------------------------------------------------------------------------

    def start_labeling(self) -> None:
        """Open (creating it through the engine if needed) the store, and start drawing in it."""
        scene = self._scene()
        if not self._scene_path():
            self._push(Qgis.Warning, "Pick the SAR scene you want to label in the Scene list first.")
            return
        path = label_store.store_path(self._project) or self._ask_store_path(Path(self._scene_path()).parent)
        if not path:
            return
        if Path(path).exists():
            self._open(path)
            return
        self._creating = self._start(label_store_init_command(path, label_store.store_crs(scene)),
                                     "Slick Mapper: creating the label store", partial(self._created, path))
        self.start_button.setEnabled(False)
        self.store_label.setText(f"Creating the label store {path}…")

    def _ask_store_path(self, folder: Path) -> str:
        """An unsaved project has no folder to put its store in: the analyst picks a file, once."""
        path, _ = QFileDialog.getSaveFileName(
            self, "Keep this project's labels in", str(folder / "slick_labels.gpkg"), "GeoPackage (*.gpkg)",
            options=QFileDialog.DontConfirmOverwrite)
        if not path:
            return ""
        if not path.lower().endswith(".gpkg"):
            path += ".gpkg"
        if Path(path).exists():
            try:
                StoreLayers.open(path)
            except LabelingError as error:
                self._push(Qgis.Critical, str(error))
                return ""
        label_store.remember_store(self._project, path)
        return path

    def _created(self, path: str, result: RunResult) -> None:
        self._creating = None
        if result.status is Status.CANCELLED or label_store.store_path(self._project) != path:
            self.refresh()  # cancelled, or another project was opened meanwhile
            return
        if not result.ok:
            self.refresh()
            self._push(Qgis.Critical, f"The label store could not be created: {result.message.splitlines()[0]}",
                       result.message)
            return
        self._open(path)

    def _open(self, path: str) -> None:
        """Load the store's layers (once), make its labels editable and active, and start drawing."""
        try:
            layers = self._layers()
            if layers is None:
                layers = StoreLayers.open(path)
                layers.add_to(self._project)
                label_store.remember_store(self._project, path)
            label_store.configure(layers, self._scene_path())
            label_store.start_editing(layers, lambda text: self._push(Qgis.Critical, text), self.refresh)
        except LabelingError as error:
            self._push(Qgis.Critical, str(error))
            self.refresh()
            return
        self._iface.setActiveLayer(layers.labels)
        self._iface.actionAddFeature().trigger()
        self.refresh()
        self._push(Qgis.Info, f"Draw slicks on {Path(self._scene_path()).name}: each polygon is saved as soon as "
                              "you finish it. Set its class to lookalike in the form for a look-alike.")

    # ---- labels from detections, reviewed areas, export --------------------------------------------------

    def copy_selected(self, cls: str) -> None:
        """Accept (slick) or reject (look-alike) the selected outlines of any detection in the project."""
        layers = self._layers()
        if layers is None:
            return
        try:
            added = label_store.copy_selected(self._project, layers, self._scene_path(), cls)
        except LabelingError as error:
            self._push(Qgis.Warning, str(error))
            return
        what = "slick" if cls == "slick" else "look-alike"
        self._push(Qgis.Success, f"{added} {what} label{'' if added == 1 else 's'} added from the detection.")

    def mark_reviewed(self) -> None:
        layers, scene = self._layers(), self._scene()
        if layers is None or scene is None:
            return
        canvas = self._iface.mapCanvas()
        try:
            label_store.add_reviewed_view(self._project, layers, canvas.extent(), canvas.mapSettings().destinationCrs(),
                                       scene.extent(), scene.crs())
        except LabelingError as error:
            self._push(Qgis.Warning, str(error))
            return
        self._push(Qgis.Success, f"Map view marked as reviewed on {scene.name()}: "
                                 f"{label_store.counts(self._project, layers, self._scene_path()).text()}.")

    def export_mask(self) -> None:
        path, scene = label_store.store_path(self._project), self._scene_path()
        if not path or not scene:
            return
        suggested = Path(path).parent / f"{Path(scene).stem}_labels.png"
        out, _ = QFileDialog.getSaveFileName(self, "Export the slick labels as a mask", str(suggested),
                                             "PNG with world file (*.png);;GeoTIFF (*.tif)")
        if not out:
            return
        self.export_button.setEnabled(False)
        self._start(label_export_command(path, scene, out), "Slick Mapper: exporting a label mask", self._exported)

    def _exported(self, result: RunResult) -> None:
        self.refresh()
        if result.ok:
            self._push(Qgis.Success, f"Label mask written: {result.data.get('mask')}")
        elif result.status is not Status.CANCELLED:
            self._push(Qgis.Critical, f"The mask could not be exported: {result.message.splitlines()[0]}",
                       result.message)

    # ---- where to label next -------------------------------------------------------------------------

    def show_uncertain(self, probability: QgsRasterLayer, blocks: Sequence[Dict[str, Any]]) -> None:
        """List the engine's ranking of a detection's blocks (its result's ``uncertain_blocks``, most
        uncertain first), each item zooming to its block of ``probability``."""
        self.next_list.clear()
        self.next_label.setText("<b>Where to label next</b>: where the model is least sure (1 = on the threshold "
                                "everywhere). Click to zoom; label it, then mark it reviewed."
                                if blocks else "<b>Where to label next</b>: the detection covers no full block.")
        self.next_list.setVisible(bool(blocks))
        crs = probability.crs()
        for number, block in enumerate(blocks, 1):
            above = 100 * float(block["above"])
            item = QListWidgetItem(f"{number}. uncertainty {float(block['uncertainty']):.2f} · {above:.0f} % slick")
            item.setToolTip(f"{block['cols']} × {block['rows']} px at column {block['col']}, row {block['row']} of "
                            f"{probability.name()}; {above:.0f} % of it at or above the threshold.")
            item.setData(Qt.UserRole, (QgsRectangle(*block["extent"]), crs))
            self.next_list.addItem(item)

    def zoom_to(self, item: QListWidgetItem) -> None:
        extent, crs = item.data(Qt.UserRole)
        canvas = self._iface.mapCanvas()
        target: QgsCoordinateReferenceSystem = canvas.mapSettings().destinationCrs()
        view = QgsCoordinateTransform(crs, target, self._project).transformBoundingBox(extent)
        view.grow(ZOOM_MARGIN * max(view.width(), view.height()))
        canvas.setExtent(view)
        canvas.refresh()
