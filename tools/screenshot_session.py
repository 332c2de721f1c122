"""Run inside desktop QGIS by tools/desktop_screenshot.py (``qgis --code``): detect, then grab the window.

QGIS runs ``--code`` before its plugins have started, so every step polls from the event loop instead
of assuming that anything is there yet; the whole session gives up after a few minutes. It exits with
``os._exit`` so that no "save the project?" question can keep a virtual screen open forever.
"""

import os
import time

from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
from qgis.PyQt.QtCore import QTimer
from qgis.utils import iface, plugins

SCENE = os.environ["SLICK_SHOT_SCENE"]
MODEL = os.environ.get("SLICK_SHOT_MODEL", "")
OUT = os.environ["SLICK_SHOT_OUT"]
STARTED = time.monotonic()
GIVE_UP_S = float(os.environ.get("SLICK_SHOT_GIVE_UP_S", 180))
ENDED_WITHOUT_RESULT_S = 10
"""Seconds after pressing Detect with no task running and no new layer: the engine refused or failed."""
state = {}


def later(step, ms=500):
    if time.monotonic() - STARTED > GIVE_UP_S:
        iface.mainWindow().grab().save(OUT)  # the window as it was: what kept the session waiting
        print(f"screenshot session: gave up waiting in {step.__name__}", flush=True)
        os._exit(3)
    QTimer.singleShot(ms, step)


def wait_for_plugin():
    plugin = plugins.get("slick_mapper")
    if plugin is None or plugin.action is None:
        return later(wait_for_plugin)
    window = iface.mainWindow()
    window.resize(1600, 1000)
    window.showMaximized()
    layer = QgsRasterLayer(SCENE, os.path.splitext(os.path.basename(SCENE))[0])
    QgsProject.instance().addMapLayer(layer)
    iface.setActiveLayer(layer)
    plugin.action.setChecked(True)
    state["plugin"], state["scene"] = plugin, layer
    later(press_detect, 3000)


def press_detect():
    dock = state["plugin"].dock
    if dock is None or dock.model_combo.count() == 0 or not dock.run_controls.run_button.isEnabled():
        return later(press_detect)
    if MODEL:
        paths = [str((dock.model_combo.itemData(i) or {}).get("path") or "") for i in range(dock.model_combo.count())]
        if MODEL not in paths:
            return later(press_detect)
        dock.model_combo.setCurrentIndex(paths.index(MODEL))
        dock.against_parent.setChecked(bool(os.environ.get("SLICK_SHOT_AGAINST_PARENT")))
    if dock.preparing:  # an analyst looks at the scene meanwhile: the detection shown is not the one that waited for it
        return later(press_detect)
    dock.run_controls.run_button.click()
    state["layers"] = len(QgsProject.instance().mapLayers())
    state["pressed"] = time.monotonic()
    later(wait_for_result, 2000)


def wait_for_result():
    busy = QgsApplication.taskManager().countActiveTasks()
    if len(QgsProject.instance().mapLayers()) <= state["layers"]:
        if not busy and time.monotonic() - state["pressed"] > ENDED_WITHOUT_RESULT_S:
            iface.mainWindow().grab().save(OUT)  # the dock's and the message bar's answer is the picture
            print("screenshot session: the detection ended without adding layers", flush=True)
            os._exit(4)
        return later(wait_for_result)
    if busy:
        return later(wait_for_result)
    iface.mapCanvas().setExtent(state["scene"].extent())  # now that the window has its final size
    iface.mapCanvas().refreshAllLayers()
    later(grab, 4000)


def grab():
    if iface.mapCanvas().isDrawing():
        return later(grab)
    # QGIS tells a window that is not active "Task complete" in its message bar, over the dock's own answer; on a
    # virtual screen no window manager ever makes the window active, where an analyst at the desktop sees that answer.
    bar = iface.messageBar()
    while bar.currentItem() is not None and bar.currentItem().title() == "Task complete":
        bar.popWidget(bar.currentItem())
    iface.mainWindow().grab().save(OUT)
    print(f"screenshot session: saved {OUT}", flush=True)
    os._exit(0)


later(wait_for_plugin)
