"""The batch manifest: one record per scene, so a rerun knows what is done, what failed and what changed.

A record is keyed by the scene's content hash (not its path): a scene copied under two names is one
scene, and a file replaced under the same name is a new one. Each record also keeps the model's hash and
the options that shape the result, so a scene is redone exactly when any of them changed. The file is
rewritten whole and atomically after every finished scene, so a killed run loses only scenes in flight.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from ..atomic import write_text
from ..errors import InputError
from ..machine import file_sha256

MANIFEST_NAME = "manifest.json"
FORMAT = 1

DONE, FAILED, DUPLICATE = "done", "failed", "duplicate"


def options_hash(options: dict) -> str:
    return hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class SceneRecord:
    """What happened to one scene (identified by its content hash) in the latest run that touched it."""

    scene_hash: str
    scene_id: str
    path: str
    outcome: str
    model_hash: str = ""
    options_hash: str = ""
    options: dict = field(default_factory=dict)
    error: str = ""
    error_kind: str = ""
    duplicate_of: str = ""
    folder: str = ""
    """Relative to the batch folder: the scene's detection outputs and footprint."""
    slicks: str = ""
    n_slicks: int = 0
    acquired: Optional[str] = None
    mode: Optional[str] = None
    polarisation: Optional[str] = None
    seconds: float = 0.0
    worker_peak_mb: float = 0.0
    """Peak resident memory of the worker process so far when the scene finished."""
    weights_from: str = ""
    """Empty when the folder's model detected with its own weights; else whose did (a fine-tuned model's parent,
    on a scene it was not taught on: ``registry.weights_for``)."""
    threshold: Optional[float] = None
    """The probability the scene's mask was cut at (``DetectResult.threshold``): a fine-tuned model's own on the
    scenes it was taught on, its parent's elsewhere, so one batch can hold scenes cut at different levels."""
    min_area_km2: Optional[float] = None
    """The smallest slick kept there; with ``threshold``, what a slick count per scene is comparable under."""
    finished: str = ""


@dataclass
class Manifest:
    """The records of a batch folder plus the model they were made with (one model per folder)."""

    folder: Path
    model_name: str = ""
    model_hash: str = ""
    records: dict[str, SceneRecord] = field(default_factory=dict)
    hashes: dict[str, dict] = field(default_factory=dict)
    """path -> {size, mtime_ns, sha256}: a file unchanged since it was hashed is not read again."""

    @property
    def path(self) -> Path:
        return self.folder / MANIFEST_NAME

    @classmethod
    def load(cls, folder: Path) -> "Manifest":
        path = folder / MANIFEST_NAME
        if not path.exists():
            return cls(folder)
        try:
            data = json.loads(path.read_text())
            records = {key: SceneRecord(**value) for key, value in data["records"].items()}
            return cls(folder, data.get("model_name", ""), data.get("model_hash", ""), records, data.get("hashes", {}))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(
                f"The batch manifest {path} cannot be read ({exc}).",
                "Move it away to start the batch afresh, or give another --out folder.",
            ) from exc

    def save(self) -> None:
        data = {
            "format": FORMAT,
            "model_name": self.model_name,
            "model_hash": self.model_hash,
            "records": {key: asdict(record) for key, record in sorted(self.records.items())},
            "hashes": self.hashes,
        }
        write_text(self.path, json.dumps(data, indent=1))

    def content_hash(self, path: Path) -> str:
        """The scene's SHA-256, from the cache when its size and modification time are unchanged."""
        stat = path.stat()
        key = str(path.resolve())
        cached = self.hashes.get(key)
        if cached and cached["size"] == stat.st_size and cached["mtime_ns"] == stat.st_mtime_ns:
            return cached["sha256"]
        digest = file_sha256(path)
        self.hashes[key] = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": digest}
        return digest

    def is_current(self, scene_hash: str, model_hash: str, opts_hash: str) -> bool:
        """Done with this model and these options, and its outputs still on disk."""
        record = self.records.get(scene_hash)
        return (
            record is not None
            and record.outcome == DONE
            and record.model_hash == model_hash
            and record.options_hash == opts_hash
            and (self.folder / record.folder).is_dir()
        )

    def done(self) -> Iterator[SceneRecord]:
        return (r for r in self.records.values() if r.outcome == DONE)

    def check_model(self, model_name: str, model_hash: str) -> None:
        """One folder, one model: a catalogue of another model version is kept apart, never mixed in."""
        if self.model_hash and self.model_hash != model_hash and any(self.done()):
            raise InputError(
                f"{self.folder} holds detections by model {self.model_name} ({self.model_hash[:12]}); "
                f"this run uses {model_name} ({model_hash[:12]}).",
                "Give another --out folder, so that the two models' catalogues stay apart.",
            )
        self.model_name, self.model_hash = model_name, model_hash


