"""A live chart of a fine-tuning run: its training loss per epoch (the dock's recipe keeps no validation tiles).

The engine sends one ``metrics`` event per epoch; ``Epoch.from_metrics`` reads it and ``LossChart`` draws
the series with QPainter, so the plugin needs no charting package.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

from qgis.PyQt.QtCore import QPointF, QRectF, QSize, Qt
from qgis.PyQt.QtGui import QColor, QPainter, QPen, QPolygonF
from qgis.PyQt.QtWidgets import QSizePolicy, QWidget

TRAIN_COLOUR = QColor("#1f77b4")


@dataclass(frozen=True)
class Epoch:
    number: int
    train_loss: float

    @classmethod
    def from_metrics(cls, scores: Dict[str, Any]) -> "Epoch":
        """From the engine's ``metrics`` event; a score it could not compute (null) is drawn as missing."""
        def number(key: str) -> float:
            value = scores.get(key)
            return float("nan") if value is None else float(value)
        return cls(int(scores["epoch"]), number("train_loss"))


class LossChart(QWidget):
    """Loss on the left axis (from 0), epochs along the bottom."""

    MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 46, 12, 20, 22

    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.epochs: List[Epoch] = []
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)
        self.setMinimumHeight(150)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt API
        return QSize(300, 150)

    def clear(self) -> None:
        self.epochs = []
        self.update()

    def add_metrics(self, scores: Dict[str, Any]) -> None:
        """One epoch's scores, as a training run sends them; a repeated epoch replaces the earlier one."""
        epoch = Epoch.from_metrics(scores)
        self.epochs = [e for e in self.epochs if e.number != epoch.number] + [epoch]
        self.update()

    def paintEvent(self, event: object) -> None:  # noqa: N802 - Qt API
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        painter.fillRect(self.rect(), self.palette().base())
        plot = QRectF(self.MARGIN_LEFT, self.MARGIN_TOP, self.width() - self.MARGIN_LEFT - self.MARGIN_RIGHT,
                      self.height() - self.MARGIN_TOP - self.MARGIN_BOTTOM)
        text = self.palette().text().color()
        painter.setPen(QPen(text, 1))
        painter.drawRect(plot)
        if not self.epochs:
            painter.drawText(plot, Qt.AlignCenter, "The training loss appears here after each epoch.")
            return
        losses = [e.train_loss for e in self.epochs if math.isfinite(e.train_loss)]
        top_loss = max(losses, default=1.0) * 1.1 or 1.0
        last = max(e.number for e in self.epochs)
        span = max(last - 1, 1)

        def x(number: int) -> float:
            return plot.left() + plot.width() * ((number - 1) / span if last > 1 else 0.5)

        def y(value: float, top: float) -> float:
            return plot.bottom() - plot.height() * min(max(value / top, 0.0), 1.0)

        painter.drawText(QRectF(0, plot.top() - 6, self.MARGIN_LEFT - 4, 12), Qt.AlignRight | Qt.AlignVCenter,
                         f"{top_loss:.2g}")
        painter.drawText(QRectF(0, plot.bottom() - 6, self.MARGIN_LEFT - 4, 12), Qt.AlignRight | Qt.AlignVCenter, "0")
        painter.drawText(QRectF(plot.left(), plot.bottom() + 2, plot.width(), self.MARGIN_BOTTOM - 2),
                         Qt.AlignCenter, f"epoch 1 … {last}" if last > 1 else "epoch 1")
        painter.setPen(QPen(TRAIN_COLOUR, 2))
        points = sorted((e.number, e.train_loss) for e in self.epochs)
        self._draw_series(painter, [QPointF(x(n), y(v, top_loss)) for n, v in points if math.isfinite(v)])
        painter.drawText(QPointF(plot.left() + 4, self.MARGIN_TOP - 6), "train loss")

    @staticmethod
    def _draw_series(painter: QPainter, points: Sequence[QPointF]) -> None:
        """A polyline with a dot per epoch, so a single epoch is visible too."""
        if len(points) > 1:
            painter.drawPolyline(QPolygonF(list(points)))
        for point in points:
            painter.drawEllipse(point, 2.5, 2.5)
