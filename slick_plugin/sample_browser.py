"""The sample browser: thumbnails of generated tiles with their soft label in red, keep or discard each.

The engine owns the sample folder: the browser shows what ``samples summary`` says and changes it only
through ``samples keep|discard``, which re-read the index before writing, so a keep or discard made
while a generation is adding samples to the same index loses neither change. New samples appear while a
generation runs because, while the browser follows a run, a file watcher on the folder asks for a new
summary each time the engine replaces the index (once per batch), rather than a timer starting engine
processes. Outside a run only the browser's own keep and discard change the folder, and it shows their
outcome itself.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from qgis.core import Qgis
from qgis.PyQt.QtCore import QFileSystemWatcher, QSize, Qt, QTimer, pyqtSignal
from qgis.PyQt.QtGui import QBrush, QColor, QIcon, QPixmap
from qgis.PyQt.QtWidgets import (QAbstractItemView, QHBoxLayout, QLabel, QListView, QListWidget, QListWidgetItem,
                                 QPushButton, QVBoxLayout, QWidget)

from .commands import samples_keep_command, samples_summary_command
from .rich_text import html_text
from .tasks import EngineTask
from .engine_runner import RunResult, Status

StartTask = Callable[..., EngineTask]
"""The dock's ``_start(command, description, on_done, ...)``."""
Push = Callable[..., None]
"""The dock's ``_push(level, text, details="")``."""
THUMBNAIL = 96
"""Thumbnail side in pixels: the engine's previews are at most 128, so nothing is blown up much."""
SETTLE_MS = 300
"""Wait after the folder changed before reading it: the engine writes a batch's files in a burst."""
DISCARDED_TEXT = QColor("#8a8a8a")


class SampleBrowser(QWidget):
    """Thumbnails of one sample folder, Keep / Discard for the selected ones, and the count of kept samples."""

    changed = pyqtSignal(object)
    """(the latest ``samples summary`` data) after every refresh, and after a keep or discard."""

    def __init__(self, start: StartTask, push: Push, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self._start = start
        self._push = push
        self.folder = ""
        self.summary: Optional[Dict[str, Any]] = None
        self._reading: Optional[EngineTask] = None
        self._read_again = False
        self._marking: Optional[EngineTask] = None
        self._following = False
        self._pixmaps: Dict[str, QPixmap] = {}
        self._watcher = QFileSystemWatcher(self)
        self._watcher.directoryChanged.connect(self._folder_changed)
        self._settle = QTimer(self)
        self._settle.setSingleShot(True)
        self._settle.setInterval(SETTLE_MS)
        self._settle.timeout.connect(self.refresh)
        self._build()

    def _build(self) -> None:
        self.count_label = QLabel()
        self.count_label.setWordWrap(True)
        self.list = QListWidget()
        self.list.setViewMode(QListView.IconMode)
        self.list.setIconSize(QSize(THUMBNAIL, THUMBNAIL))
        self.list.setGridSize(QSize(THUMBNAIL + 16, THUMBNAIL + 40))
        self.list.setResizeMode(QListView.Adjust)
        self.list.setMovement(QListView.Static)
        self.list.setUniformItemSizes(True)
        self.list.setWordWrap(True)
        self.list.setSelectionMode(QAbstractItemView.ExtendedSelection)
        self.list.setMinimumHeight(2 * (THUMBNAIL + 40) + 8)
        self.list.setToolTip("Generated tiles with the generator's soft slick label in red. Select some, then keep "
                             "or discard them; discarded samples are greyed and never used for training.")
        self.list.itemSelectionChanged.connect(self._enable)
        self.keep_button = QPushButton("Keep")
        self.keep_button.setToolTip("Use the selected samples for training again.")
        self.keep_button.clicked.connect(partial(self.mark_selected, True))
        self.discard_button = QPushButton("Discard")
        self.discard_button.setToolTip("Never use the selected samples for training (they stay in the folder).")
        self.discard_button.clicked.connect(partial(self.mark_selected, False))
        buttons = QHBoxLayout()
        buttons.addWidget(self.keep_button)
        buttons.addWidget(self.discard_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.count_label)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        self._show_counts()
        self._enable()

    # ---- which folder, and when to read it ---------------------------------------------------------------

    def show_folder(self, folder: str) -> None:
        """Browse ``folder`` (it may not exist yet: a first generation creates it)."""
        if folder == self.folder:
            return
        self._unwatch()
        self.folder = folder
        self.summary = None
        self.list.clear()
        self._pixmaps.clear()
        self._show_counts()
        self._enable()
        self.changed.emit({})
        self.notice()
        self.refresh()

    def follow(self, running: bool) -> None:
        """Show samples as a generation into the folder adds them (``running``), or stop doing so."""
        self._following = running
        if running:
            self.notice()
        else:
            self._unwatch()

    def notice(self) -> None:
        """While following a run, watch the folder from the moment it exists; read it if the run created it."""
        if (self._following and self.folder and Path(self.folder).is_dir()
                and self.folder not in self._watcher.directories()):
            self._watcher.addPath(self.folder)
            if self.summary is None:
                self._settle.start()

    def _unwatch(self) -> None:
        self._settle.stop()
        if self._watcher.directories():
            self._watcher.removePaths(self._watcher.directories())

    def _folder_changed(self, _: str) -> None:
        self._settle.start()

    def refresh(self) -> None:
        """Read the folder again through the engine; one read at a time, another one after it if asked meanwhile."""
        if not self.folder or not Path(self.folder).is_dir():
            return
        if self._reading is not None:
            self._read_again = True
            return
        self._read_again = False
        self._reading = self._start(samples_summary_command(self.folder), "Slick Mapper: reading the samples",
                                    partial(self._summarised, self.folder))

    def _summarised(self, folder: str, result: RunResult) -> None:
        """Show what was read (even if the folder has changed since: a run adds samples faster than some
        machines read them), then read again if asked meanwhile."""
        self._reading = None
        if result.status is Status.CANCELLED:  # the plugin is unloading
            return
        if folder == self.folder and result.ok:
            self.summary = result.data
            self._show_samples()
            self.changed.emit(self.summary)
        elif folder == self.folder and result.status is Status.FAILED:
            self.summary = None
            self.list.clear()
            self.count_label.setText(f"<span style='color:#b00020'>{html_text(result.message)}</span>")
            self._enable()
        if folder != self.folder or self._read_again:
            self.refresh()

    def shutdown(self) -> None:
        """Stop watching: the plugin is unloading (the dock cancels the running reads)."""
        self.follow(False)

    # ---- what is shown -------------------------------------------------------------------------------

    def _show_samples(self) -> None:
        """Update the thumbnails in place (new ones added at the end), so selection and scrolling stay."""
        records = list((self.summary or {}).get("samples") or [])
        wanted = {str(record["id"]) for record in records}
        for row in reversed(range(self.list.count())):
            if self.list.item(row).data(Qt.UserRole) not in wanted:
                self.list.takeItem(row)
        items = {self.list.item(row).data(Qt.UserRole): self.list.item(row) for row in range(self.list.count())}
        for record in records:
            item = items.get(str(record["id"]))
            if item is None:
                item = QListWidgetItem()
                item.setData(Qt.UserRole, str(record["id"]))
                item.setTextAlignment(Qt.AlignHCenter | Qt.AlignTop)
                self.list.addItem(item)
            self._show_item(item, record)
        self._show_counts()
        self._enable()

    def _show_item(self, item: QListWidgetItem, record: Dict[str, Any]) -> None:
        sample_id, kept = str(record["id"]), bool(record["kept"])
        fraction = record.get("slick_fraction")
        slick = f"{100 * float(fraction):.0f} % slick" if fraction is not None else "no slick class"
        item.setText(f"{sample_id}\n{slick}" if kept else f"{sample_id}\ndiscarded")
        pixmap = self._pixmap(sample_id, str(record.get("preview") or ""))
        icon = QIcon(pixmap)
        item.setIcon(icon if kept else QIcon(icon.pixmap(pixmap.size(), QIcon.Disabled)))
        item.setForeground(QBrush() if kept else QBrush(DISCARDED_TEXT))
        item.setToolTip(f"Sample {sample_id}: seed {record.get('seed')}, {record.get('solver')} in "
                        f"{record.get('steps')} steps, {slick} pixels. "
                        + ("Kept: used for training." if kept else "Discarded: never used for training."))

    def _pixmap(self, sample_id: str, preview: str) -> QPixmap:
        """The sample's preview at thumbnail size, read once: a sample's files never change.

        Small tiles are enlarged pixel for pixel (a list view never enlarges icons itself), so speckle
        stays speckle instead of a blur.
        """
        if sample_id not in self._pixmaps:
            pixmap = QPixmap(preview)
            if pixmap.isNull():  # lost files: ``samples regenerate`` restores them
                pixmap = QPixmap(THUMBNAIL, THUMBNAIL)
                pixmap.fill(QColor("#d0d0d0"))
            smaller = max(pixmap.width(), pixmap.height()) < THUMBNAIL
            self._pixmaps[sample_id] = pixmap.scaled(
                THUMBNAIL, THUMBNAIL, Qt.KeepAspectRatio, Qt.FastTransformation if smaller else Qt.SmoothTransformation)
        return self._pixmaps[sample_id]

    def _show_counts(self) -> None:
        summary = self.summary
        if not self.folder:
            text = "Samples: this project has no label store yet, so no sample folder either."
        elif summary is None:
            text = (f"No samples yet in {html_text(self.folder)}: Generate samples adds them here."
                    if not Path(self.folder).is_dir() else "Reading the samples…")
        elif not summary.get("total"):
            text = f"No samples yet in {html_text(self.folder)}."
        else:
            discarded = int(summary.get("discarded") or 0)
            text = f"<b>{summary['kept']} kept</b> of {summary['total']} samples"
            if discarded:
                text += f", {discarded} discarded (greyed: never used for training)"
        self.count_label.setText(text)

    def _enable(self) -> None:
        selected = bool(self.list.selectedItems())
        for button in (self.keep_button, self.discard_button):
            button.setEnabled(selected and self._marking is None)

    # ---- keep and discard ----------------------------------------------------------------------------

    def selected_ids(self) -> List[str]:
        return sorted(str(item.data(Qt.UserRole)) for item in self.list.selectedItems())

    def mark_selected(self, keep: bool) -> None:
        """Keep or discard the selected samples through the engine."""
        ids = self.selected_ids()
        if not ids or self._marking is not None:
            return
        self._marking = self._start(samples_keep_command(self.folder, ids, keep),
                                    f"Slick Mapper: {'keeping' if keep else 'discarding'} {len(ids)} samples",
                                    partial(self._marked, self.folder, ids, keep))
        self._enable()

    def _marked(self, folder: str, ids: List[str], keep: bool, result: RunResult) -> None:
        self._marking = None
        self._enable()
        if result.status is Status.CANCELLED or folder != self.folder:
            return
        if not result.ok:
            self._push(Qgis.Critical, f"The samples could not be {'kept' if keep else 'discarded'}: "
                                      f"{result.message.splitlines()[0]}", result.message)
            return
        self.list.clearSelection()  # a selected thumbnail would hide its new look
        if self._reading is not None:  # it may have read the index before this change
            self._read_again = True
        if self.summary is not None:  # shown at once, as the engine wrote it
            for record in self.summary["samples"]:
                if record["id"] in ids:
                    record["kept"] = keep
            self.summary.update(kept=result.data["kept"], total=result.data["total"],
                                discarded=result.data["total"] - result.data["kept"])
            self._show_samples()
            self.changed.emit(self.summary)
