"""Every Slick Mapper setting, declared once; the options page and the dock are built from these.

Values live in QgsSettings under ``slick_mapper/``. An empty engine Python or model means "the
default the plugin finds itself", so a fresh install works without visiting the options page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Tuple, Union

from qgis.core import QgsSettings

from .commands import GENERATOR_NETS
from .contract import DEFAULT_MIN_AREA_KM2, DEFAULT_OVERLAP, GENERATOR_LOW_RES_STEPS, GENERATOR_STEPS
from .paths import default_engine_python, engine_root
from .engine_runner import EngineRunner

GROUP = "slick_mapper"

Value = Union[str, int, float]


@dataclass(frozen=True)
class Setting:
    """One declared setting: its key, what the options page shows, its default and its type.

    ``kind`` picks the editor: "file", "folder", "text", "choice", "int" or "float". A number setting with
    ``special`` shows that text at its minimum, which then stands for "not set here" (e.g. the model's own).
    """

    name: str
    label: str
    description: str
    default: Value
    kind: str
    choices: Tuple[str, ...] = ()
    minimum: float = 0
    maximum: float = 0
    step: float = 1
    special: str = ""

    @property
    def key(self) -> str:
        return f"{GROUP}/{self.name}"

    def value(self) -> Any:
        """The stored value converted to the declared type; the default when unset or unreadable."""
        raw = QgsSettings().value(self.key, self.default)
        if isinstance(self.default, bool):  # QSettings hands booleans back as "true"/"false" after a restart
            return raw in (True, 1, "true", "1")
        try:
            value = type(self.default)(raw)
        except (TypeError, ValueError):
            return self.default
        if self.choices and value not in self.choices:
            return self.default
        return value

    def set_value(self, value: Value) -> None:
        """Stores only a value the analyst chose: a default is left unset, so that a later plugin's default reaches
        the profile (the dock saves every editor on each run, and a stored default would outlive its meaning)."""
        if value == self.default:
            QgsSettings().remove(self.key)
        else:
            QgsSettings().setValue(self.key, value)


def steps_setting(name: str, label: str, description: str, default: int, maximum: int = 1_000_000,
                  step: int = 100) -> Setting:
    """A number of training or sampling steps: a whole number from 0."""
    return Setting(name, label, description, default, "int", minimum=0, maximum=maximum, step=step)


ENGINE_PYTHON = Setting(
    "engine_python", "Engine Python",
    "Python that runs the engine (needs torch, rasterio, fiona). Empty: the checkout's .venv, else python3.",
    "", "file")
OUTPUT_FOLDER = Setting(
    "output_folder", "Output folder",
    "Where results are written. Empty: next to the scene.", "", "folder")
DEFAULT_MODEL = Setting(
    "default_model", "Default model",
    "Model file preselected in the dock. Empty: the engine's bundled default.", "", "file")
DEVICE = Setting(
    "device", "Device", "Where the model runs; auto picks a GPU when there is one.", "auto", "choice",
    choices=("auto", "cuda", "cpu"))
TILE = Setting(
    "tile", "Tile size (px)", "Side of the square windows the model sees (a multiple of 32 from 64). Model's own: the size "
    "the model was made for, as the command line uses (the dark-spot baseline's 1,024, the networks' 512).", 0, "int",
    minimum=0, maximum=2048, step=32, special="Model's own")
OVERLAP = Setting(
    "overlap", "Overlap (px)", "Pixels shared by neighbouring tiles, to hide seams (less than half a tile).", DEFAULT_OVERLAP, "int",
    minimum=0, maximum=1024, step=16)
THRESHOLD = Setting(
    "threshold", "Threshold",
    "Probability above which a pixel counts as slick. Model's own: the one stored in the model, "
    "calibrated on its validation tiles when it was fine-tuned.", 0.0, "float",
    minimum=0.0, maximum=0.99, step=0.05, special="Model's own")
MIN_AREA = Setting(
    "min_area_km2", "Smallest slick (km²)",
    "Slicks smaller than this are dropped from the outlines and the mask as speckle. Model's own: the one stored in "
    f"the model, measured with it ({DEFAULT_MIN_AREA_KM2:g} km², 80 pixels at 25 m, unless the model says otherwise).",
    0.0, "float", minimum=0.0, maximum=100.0, step=0.05, special="Model's own")
MIRROR = Setting(
    "mirror_averaging", "Mirror averaging",
    "Average each tile over its mirror images: four times the model's work; on real Arctic scenes it raised "
    "slick Dice from 0.385 to 0.414 and removed a fifth of the false slick area. Turn it off for a quick look.", True, "bool")

GENERATOR_NET = Setting(
    "generator_net", "Generator network",
    "Size of a newly trained sample generator: small trains on a CPU in minutes; ddpm is the paper's network "
    "(114 M weights), for a GPU.", "small", "choice", choices=GENERATOR_NETS)
GENERATOR_STEPS = steps_setting(
    "generator_steps", "Generator training steps",
    "Full-size training steps of a new generator (after its half-size steps). More steps, more varied samples.", GENERATOR_STEPS)
GENERATOR_LOW_RES_STEPS = steps_setting(
    "generator_low_res_steps", "Generator half-size steps",
    "Training steps on half-size tiles, which come first and are cheaper (0 skips them).", GENERATOR_LOW_RES_STEPS)
SAMPLING_STEPS = steps_setting(
    "sampling_steps", "Sampling steps",
    "Solver steps per generated sample. 0: the solver's own (20 for DPM-Solver++, 200 for DDIM).", 0,
    maximum=1000, step=10)
GENERATION_PRIORITY = Setting(
    "generation_priority", "Generation priority",
    "low: training a generator and generating samples only take the CPU that QGIS and detections leave free "
    "(best while you work). normal: they compete with them, finishing sooner on a busy machine.",
    "low", "choice", choices=("low", "normal"))

ALL: Tuple[Setting, ...] = (ENGINE_PYTHON, OUTPUT_FOLDER, DEFAULT_MODEL, DEVICE, TILE, OVERLAP, THRESHOLD, MIN_AREA, MIRROR,
                            GENERATOR_NET, GENERATOR_STEPS, GENERATOR_LOW_RES_STEPS, SAMPLING_STEPS,
                            GENERATION_PRIORITY)

SETTINGS_VERSION = 3
"""2: the tile size means the model's own unless set. Plugins before it stored the dock's former default, 512, on
every detection, so a profile that had ever run one kept the dark-spot baseline (made for 1,024) on 512-px tiles.
3: the smallest slick means the model's own unless set, as models now carry theirs. Plugins before it stored the dock's
former default, 0.05, on every detection, and 0 meant every patch, which now reads as the model's own."""
VERSION_KEY = f"{GROUP}/settings_version"


def migrate() -> None:
    """Give a profile written by an earlier plugin this one's meanings, once: a stored tile size of 512 or smallest
    slick of 0.05 km² was the old default, not a choice, and a smallest slick of 0 has changed meaning, so they are
    dropped; any other value stays."""
    stored = QgsSettings()
    try:
        version = int(stored.value(VERSION_KEY, 1))
    except (TypeError, ValueError):  # hand-edited: read as the first version, so the plugin still loads
        version = 1
    if version >= SETTINGS_VERSION:
        return
    if version < 2 and stored.contains(TILE.key) and TILE.value() == 512:
        stored.remove(TILE.key)
    if stored.contains(MIN_AREA.key) and MIN_AREA.value() in (0.0, 0.05):
        stored.remove(MIN_AREA.key)
    stored.setValue(VERSION_KEY, SETTINGS_VERSION)


def engine_runner() -> EngineRunner:
    """A runner for the configured engine Python, else the one the plugin finds itself."""
    return EngineRunner(ENGINE_PYTHON.value() or default_engine_python(), engine_root())
