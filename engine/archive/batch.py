"""Detection over an archive of scenes, one Dask task per scene, resumable from its manifest.

Each task runs ``engine.detect.detect`` itself, so a batch gives exactly what ``engine detect`` gives scene
by scene. A task never raises for a bad scene: it returns the scene's typed error, which the manifest
records, so one corrupt file never stops the others. Only a worker's death (killed, out of memory)
surfaces as a Dask error; Dask then reruns the scene on another worker, and the manifest, rewritten after
every finished scene, loses nothing that finished. The same job runs on a local cluster sized to the
machine or, with ``--scheduler``, on an existing cluster whose workers have the engine installed.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Iterator, Optional

from rasterio.errors import RasterioError

from ..jobs.detect import DetectOptions, _available_memory
from ..errors import InputError, OutputError, ResourceError, SlickMapperError
from ..machine import file_sha256, memory_bytes, utc_now
from ..models.registry import DEFAULT_MODEL, read_card
from ..progress import Progress, silent
from . import catalogue
from .footprint import write_footprint
from .manifest import DONE, DUPLICATE, FAILED, Manifest, SceneRecord, options_hash
from .scene_list import expand, scene_metadata

SCENES_DIR = "scenes"
_WORKER_MEMORY = 2 * 2**30
"""What one worker may need besides the scene strip. Detecting on a model with its export needs no PyTorch: worker
peaks of 420-710 MB on four 1,536-5,138-px-wide scenes, where workers that loaded PyTorch peaked at 900-1,180 MB
(two workers, VmHWM). A worker still loads it where the model has no export yet or runs on a GPU, hence the margin."""
_CONNECT_TIMEOUT = "10s"
RESULT_OPTIONS = ("tile", "overlap", "threshold", "band", "min_area_km2", "land_mask", "bounds", "bounds_crs", "source_grid", "tta")
"""The detection options that change a scene's result; device and speed settings do not."""


@dataclass
class BatchOptions:
    detect: DetectOptions = field(default_factory=DetectOptions)
    scheduler: Optional[str] = None
    """Address of an existing Dask scheduler (tcp://host:8786); None starts a local cluster."""
    workers: Optional[int] = None
    """Local workers; None sizes them to the machine's cores and memory."""


def run_batch(items: list[str], out_dir: str | Path, options: BatchOptions, progress: Progress | None = None) -> dict:
    """Detect slicks in every scene ``items`` names; write the manifest, per-scene outputs and the catalogue."""
    progress = progress or silent()
    started = time.monotonic()
    out_dir = Path(out_dir)
    scenes = expand(items)
    model_path = Path(options.detect.model or DEFAULT_MODEL)
    card = read_card(model_path)  # a missing or foreign model is refused before any cluster starts
    Manifest.load(out_dir).check_model(card.name, file_sha256(model_path))  # and so is another model's folder
    with _cluster(options) as (client, n_workers, threads):
        with _locked(out_dir):
            manifest = Manifest.load(out_dir)
            manifest.check_model(card.name, manifest.content_hash(model_path))
            result_options = {k: _jsonable(getattr(options.detect, k)) for k in RESULT_OPTIONS}
            opts_hash = options_hash(result_options)
            todo, counts = _plan(scenes, manifest, opts_hash, result_options)
            manifest.save()
            detect_options = replace(options.detect, model=str(model_path), overwrite=True, prefix=None)
            failures = _run(client, todo, manifest, detect_options, threads, out_dir, progress, counts)
            tables = catalogue.write(manifest)
    failed = [r for r in manifest.records.values() if r.outcome == FAILED and r.path in {str(s) for s in scenes}]
    return {
        "scenes": len(scenes),
        "detected": counts["detected"],
        "already_done": counts["current"],
        "duplicates": counts["duplicates"],
        "failed": len(failed),
        "failures": [{"scene": r.path, "error": r.error} for r in failed],
        "slicks": tables["n_slicks"],
        "catalogue": tables["paths"],
        "manifest": str(manifest.path),
        "model": card.name,
        "model_hash": manifest.model_hash,
        "workers": n_workers,
        "lost_workers": failures,
        "seconds": round(time.monotonic() - started, 2),
    }


def _jsonable(value):
    return list(value) if isinstance(value, tuple) else value


@dataclass
class _Job:
    scene: Path
    record: SceneRecord


def _plan(scenes: list[Path], manifest: Manifest, opts_hash: str, result_options: dict) -> tuple[list[_Job], dict]:
    """Which scenes to detect: new, failed or changed ones; done ones are skipped, copies recorded once."""
    todo: list[_Job] = []
    counts = {"current": 0, "duplicates": 0, "detected": 0}
    seen: dict[str, str] = {}
    for scene in scenes:
        resolved = str(scene)
        for key, record in list(manifest.records.items()):
            if record.path == resolved and record.outcome == DUPLICATE:
                del manifest.records[key]
        try:
            scene_hash = manifest.content_hash(scene)
        except OSError as exc:
            key = f"unreadable:{scene.resolve()}"
            manifest.records[key] = SceneRecord(
                scene_hash="", scene_id=scene.stem, path=resolved, outcome=FAILED, error_kind="InputError",
                error=f"Cannot read {scene} ({exc.strerror or exc}). Check the path and the file's permissions.",
                finished=utc_now())
            continue
        manifest.records.pop(f"unreadable:{scene.resolve()}", None)
        _forget_replaced(manifest, resolved, scene_hash)
        if scene_hash in seen:
            counts["duplicates"] += 1
            manifest.records[f"duplicate:{scene.resolve()}"] = SceneRecord(
                scene_hash=scene_hash, scene_id=scene.stem, path=resolved, outcome=DUPLICATE,
                duplicate_of=seen[scene_hash], finished=utc_now())
            continue
        seen[scene_hash] = resolved
        if manifest.is_current(scene_hash, manifest.model_hash, opts_hash):
            counts["current"] += 1
            continue
        record = SceneRecord(
            scene_hash=scene_hash, scene_id=scene.stem, path=resolved, outcome=FAILED,
            model_hash=manifest.model_hash, options_hash=opts_hash, options=result_options,
            error="Not finished: the run stopped while this scene was being detected.", error_kind="Interrupted",
            folder=f"{SCENES_DIR}/{scene.stem}-{scene_hash[:8]}",
        )
        todo.append(_Job(scene, record))
    return todo, counts


def _forget_replaced(manifest: Manifest, path: str, scene_hash: str) -> None:
    """A file whose content changed is a new scene: its old record and outputs go, so no stale slick stays."""
    for key, record in list(manifest.records.items()):
        if record.path == path and record.scene_hash and record.scene_hash != scene_hash and record.outcome != DUPLICATE:
            if record.folder:
                shutil.rmtree(manifest.folder / record.folder, ignore_errors=True)
            del manifest.records[key]


RETRIED_KINDS = ("WorkerDied", "OutputError")
"""Failures that come from a worker's death, not from the scene: the scene gets one more try in the same run."""


def _run(client, todo: list[_Job], manifest: Manifest, detect_options: DetectOptions, threads: int,
         out_dir: Path, progress: Progress, counts: dict) -> int:
    """Submit every job, record each as it finishes; returns how many scenes outlived their workers' deaths."""
    from distributed import wait

    total = len(todo)
    pending = {}

    def submit(job: _Job) -> None:
        future = client.submit(
            detect_scene, str(job.scene), str(out_dir / job.record.folder), asdict(detect_options), threads,
            key=f"detect-{job.record.scene_hash[:16]}-{job.record.options_hash}-{time.time_ns()}", pure=False,
        )
        pending[future] = job

    for job in todo:
        submit(job)
    retried: set[str] = set()
    finished = failed = lost = 0
    started = time.monotonic()
    _report(progress, 0, 0, total, started)
    try:
        while pending:
            try:
                done, _ = wait(list(pending), timeout=0.5, return_when="FIRST_COMPLETED")
            except TimeoutError:  # nothing finished in the last half second: a chance to hear Cancel
                done = set()
            progress.check()
            if not done:
                continue
            for future in done:
                job = pending.pop(future)
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker died under the scene as many times as Dask allows
                    lost += 1
                    outcome = {"outcome": FAILED, "error_kind": "WorkerDied", "error": (
                        f"The Dask worker detecting this scene died ({type(exc).__name__}: {exc}); "
                        "it may need more memory per worker than it had. Rerun the batch with fewer --workers.")}
                record = job.record
                if outcome["outcome"] == FAILED and outcome.get("error_kind") in RETRIED_KINDS and record.scene_hash not in retried:
                    retried.add(record.scene_hash)  # a worker that died under it, or what it left behind: once more
                    submit(job)
                    continue
                for key, value in outcome.items():
                    setattr(record, key, value)
                record.finished = utc_now()
                manifest.records[record.scene_hash] = record
                manifest.save()
                finished += 1
                failed += record.outcome == FAILED
                counts["detected"] += record.outcome == DONE
            _report(progress, finished, failed, total, started)
    except BaseException:
        client.cancel(list(pending))
        raise
    return lost


def _report(progress: Progress, finished: int, failed: int, total: int, started: float) -> None:
    left = total - finished
    message = f"{finished - failed} done, {failed} failed, {left} left"
    if finished and left:
        seconds = (time.monotonic() - started) / finished * left
        message += f", about {_duration(seconds)} left"
    progress.update("scenes", finished, total, message)


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"



def detect_scene(scene: str, folder: str, options: dict, threads: int) -> dict:
    """One scene on a worker: detection, footprint, metadata; every failure comes back as the record's error."""
    from ..jobs.detect import detect
    from ..models.runtimes import limit_threads
    from ..scenes.raster import inspect

    limit_threads(max(1, threads))
    path, folder_path = Path(scene), Path(folder)
    started = time.monotonic()
    try:
        opts = DetectOptions(**{**options, "bounds": tuple(options["bounds"]) if options.get("bounds") else None})
        opts.prefix = path.stem
        result = detect(path, folder_path, opts, silent())
        write_footprint(Path(result.mask), folder_path / "footprint.geojson")
        metadata = scene_metadata(path)
        polarisation = inspect(path, opts.band).polarisation
    except SlickMapperError as exc:
        return {"outcome": FAILED, "error": str(exc), "error_kind": type(exc).__name__,
                "seconds": round(time.monotonic() - started, 2)}
    except RasterioError as exc:  # the header read but the pixels did not: a truncated or damaged file
        return {"outcome": FAILED, "error_kind": "InputError", "seconds": round(time.monotonic() - started, 2),
                "error": f"{path.name} could not be read to the end ({exc.__cause__ or exc}): the file is truncated "
                         "or corrupt. Fetch or copy it again."}
    except Exception as exc:  # a bug or a GDAL failure the engine does not type yet: recorded, never fatal
        return {"outcome": FAILED, "error": f"Unexpected failure on this scene: {exc!r}.", "error_kind": "InternalError",
                "seconds": round(time.monotonic() - started, 2)}
    return {
        "outcome": DONE, "error": "", "error_kind": "", "slicks": str(Path(result.slicks).relative_to(folder_path.parent.parent)),
        "n_slicks": result.n_slicks, "acquired": metadata["acquired"], "mode": metadata["mode"],
        "polarisation": polarisation, "seconds": round(time.monotonic() - started, 2),
        "worker_peak_mb": round((memory_bytes() or 0) / 2**20, 1), "weights_from": result.weights_from,
        "threshold": result.threshold, "min_area_km2": result.min_area_km2,
    }


@contextmanager
def _cluster(options: BatchOptions) -> Iterator[tuple[object, int, int]]:
    """A Dask client: on the given scheduler, or on a local cluster sized to this machine."""
    from distributed import Client, LocalCluster

    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout=_CONNECT_TIMEOUT)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ResourceError(
                f"Cannot reach the Dask scheduler at {options.scheduler} ({exc}); nothing was written.",
                "Check the address (e.g. tcp://host:8786) and that the scheduler is running, or leave --scheduler out "
                "to use this machine.",
            ) from exc
        try:
            workers = client.scheduler_info().get("workers", {})
            if not workers:
                raise ResourceError(f"The Dask scheduler at {options.scheduler} has no workers; nothing was written.",
                                    "Start workers with the engine installed (dask worker ADDRESS), then run again.")
            threads = max(1, min(w.get("nthreads", 1) for w in workers.values()))
            yield client, len(workers), threads
        finally:
            client.close()
        return
    cores = os.cpu_count() or 1
    available = _available_memory()
    n_workers = options.workers or max(1, min(cores, available // _WORKER_MEMORY))
    if n_workers < 1:
        raise InputError("The number of workers must be at least 1.", "Give --workers 1 or more.")
    memory_limit = int(max(available * 0.8 / n_workers, _WORKER_MEMORY / 2))
    cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    client = Client(cluster)
    try:
        yield client, n_workers, max(1, cores // n_workers)
    finally:
        client.close()
        cluster.close()


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One batch per folder at a time: two runs rewriting one manifest would drop each other's records."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        handle = open(out_dir / ".batch.lock", "w")
    except OSError as exc:
        raise OutputError(f"Cannot write to the batch folder {out_dir} ({exc.strerror}).", "Choose a folder you can write to.") from exc
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            raise OutputError(f"Another batch is running in {out_dir}.", "Wait for it to finish, or give another --out folder.") from exc
        yield
    finally:
        handle.close()
