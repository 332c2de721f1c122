"""Where a project keeps its sample generator and its generated samples: beside its label store.

The generator learns from the store and the samples come from the generator, so all three travel
together: ``<name>_slick_labels.gpkg`` gets ``<name>_slick_generator.safetensors`` and
``<name>_slick_samples/``. The project file remembers both once they are used (as it remembers its store),
so a retrained generator, or a sample folder the analyst picked, is found again after a restart.
"""

from __future__ import annotations

from pathlib import Path

from qgis.core import QgsProject

from .label_store import SCOPE, STORE_SUFFIX, store_path

GENERATOR_KEY, SAMPLES_KEY = "generator", "samples"
GENERATOR_SUFFIX = "_slick_generator.safetensors"
SAMPLES_SUFFIX = "_slick_samples"


def _beside_store(project: QgsProject, suffix: str) -> str:
    store = store_path(project)
    if not store:
        return ""
    name = Path(store).name
    stem = name[: -len(STORE_SUFFIX)] if name.endswith(STORE_SUFFIX) else Path(store).stem
    return str(Path(store).parent / f"{stem}{suffix}")


def _remembered(project: QgsProject, key: str) -> str:
    entry, _ = project.readEntry(SCOPE, key, "")
    return project.readPath(entry) if entry else ""


def generator_path(project: QgsProject) -> str:
    """The generator this project remembers, else its name beside the store; empty without a store."""
    return _remembered(project, GENERATOR_KEY) or _beside_store(project, GENERATOR_SUFFIX)


def samples_folder(project: QgsProject) -> str:
    """The sample folder this project remembers, else its name beside the store; empty without a store."""
    return _remembered(project, SAMPLES_KEY) or _beside_store(project, SAMPLES_SUFFIX)


def remember_generator(project: QgsProject, path: str) -> None:
    project.writeEntry(SCOPE, GENERATOR_KEY, project.writePath(path))


def remember_samples(project: QgsProject, path: str) -> None:
    project.writeEntry(SCOPE, SAMPLES_KEY, project.writePath(path))


def forget_samples(project: QgsProject) -> None:
    """Go back to the sample folder beside the store."""
    project.removeEntry(SCOPE, SAMPLES_KEY)
