"""The sample folder: generated tiles and their soft labels, as a student model reads them.

::

    index.json          what the folder is and one record per sample (seed, solver, steps, kept, ...)
    tiles/<id>.npz      tile: uint8 H x W stretched 1..255 (never 0, which means no data)
                        logits: float16 C x H x W, the generator's last prediction
    previews/<id>.png   grey tile with the soft slick probability in red, for the plugin's browser

Soft labels are ``softmax(logits / T)`` with the folder's temperature T (the paper's 2) and hard labels
their argmax; both are derived on reading, so the logits are the one stored truth. Each record holds what
it takes to make the sample again (the generator's hash, the seed and the seeds generated in the same
batch, the solver, its steps, the device and CPU threads), so a set can be checked or restored from its index
(``regenerate``).

Every sample's files are written whole (temporary file, then rename) before the index names them, and
the index is replaced the same way, so a cancelled or crashed run leaves only whole samples. Index
updates re-read the index under the folder's lock, so an analyst's keep/discard made while a generation
runs is kept, and so are the generation's samples.
Discarded samples stay in the index (their seeds stay taken) but are never returned for training.
"""

from __future__ import annotations

import argparse
import io
import json
import re
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Optional

import numpy as np
from PIL import Image

from .. import __version__
from ..atomic import write_bytes
from ..errors import InputError, ModelError, OutputError
from ..locks import held
from ..machine import file_sha256, utc_now
from ..models.registry import slick_index
from ..progress import Progress, silent

if TYPE_CHECKING:
    import torch

    from .joint_ddpm import GeneratorCard

FORMAT = "slick-mapper-samples"
VERSION = 1
INDEX = "index.json"
LOCK = ".index.lock"
"""Held while the index is re-read, changed and replaced: a generation adding samples and the plugin's keep
or discard are two processes changing one index."""
TEMPERATURE = 2.0
"""The paper's T for soft labels (eq. 3)."""
PREVIEW_MAX = 128
"""Largest preview side in pixels; bigger tiles are shown downsampled."""
SAMPLE_ID = re.compile(r"[0-9]{6,12}")
"""Sample ids name files inside the folder: digits only, so an index cannot name a path outside it."""


@dataclass
class NewSample:
    """A generated sample before it has an id."""

    tile: np.ndarray
    """uint8 H x W, 1..255."""
    logits: np.ndarray
    """float C x H x W."""
    seed: int
    batch_seeds: list[int]
    solver: str
    steps: int
    device: str
    threads: Optional[int]
    """CPU threads: float rounding in the network depends on them, so exact regeneration uses the same."""


@dataclass
class GeneratedSet:
    """Kept samples ready for training: ``tiles`` as ``training.TileSet.x`` holds them, logits beside."""

    ids: list[str]
    tiles: torch.Tensor
    """(N, 1, H, W) float32, 0..255."""
    logits: torch.Tensor
    """(N, C, H, W) float32."""
    classes: list[str]
    temperature: float

    def __len__(self) -> int:
        return len(self.ids)

    def soft_labels(self) -> torch.Tensor:
        """q = softmax(logits / T) per pixel (eq. 3), (N, C, H, W)."""
        return (self.logits / self.temperature).softmax(dim=1)

    def hard_labels(self) -> torch.Tensor:
        """The most probable class per pixel, (N, H, W) int64."""
        return self.logits.argmax(dim=1)


def read_index(folder: str | Path) -> dict[str, Any]:
    """The folder's index, checked to be a sample folder of this format version."""
    folder = Path(folder)
    path = folder / INDEX
    if not path.is_file():
        raise InputError(f"{folder} is not a sample folder: it has no {INDEX}.", "Give a folder written by: python -m engine generate.")
    try:
        index = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"The sample index {path} cannot be read ({exc}).", "Restore it from a backup, or generate into a new folder.") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise InputError(f"{path} is not a Slick Mapper sample index.", "Give a folder written by: python -m engine generate.")
    if index.get("version") != VERSION:
        raise InputError(
            f"{folder} holds samples of format version {index.get('version')}, written by engine {index.get('engine_version', '?')}; "
            f"this engine reads version {VERSION}.",
            "Generate into a new folder, or use the engine version that wrote it.",
        )
    _check_records(path, index)
    return index


def _check_records(path: Path, index: dict[str, Any]) -> None:
    """Refuse an index whose records would make the engine read or write outside the folder, or fail
    half-way through a training run: it was edited by hand or damaged."""
    fields = {"tile_size": int, "classes": list, "temperature": (int, float), "generators": dict, "samples": list}
    wrong = [name for name, kind in fields.items() if not isinstance(index.get(name), kind)]
    for record in index.get("samples") if isinstance(index.get("samples"), list) else []:
        if not (
            isinstance(record, dict)
            and isinstance(record.get("id"), str)
            and SAMPLE_ID.fullmatch(record["id"])
            and isinstance(record.get("kept"), bool)
            and isinstance(record.get("seed"), int)
            and record.get("generator") in index["generators"]
        ):
            wrong.append(f"sample {str(record.get('id') if isinstance(record, dict) else record)[:40]!r}")
            break
    if wrong:
        raise InputError(
            f"The sample index {path} is damaged or was edited by hand ({', '.join(wrong)} not as the engine writes it); "
            "nothing was read or written.",
            "Restore index.json from a backup, or generate into a new folder.",
        )


def prepare(
    folder: str | Path,
    generator: dict[str, Any],
    *,
    allow_other_generator: bool = False,
    temperature: float = TEMPERATURE,
) -> str:
    """Make ``folder`` ready to take samples from ``generator`` and return the generator's key in it.

    ``generator`` holds path, name, sha256, tile_size, classes and b. A new or empty folder gets a fresh
    index. An existing sample folder is appended to when its tiles have the generator's size and classes;
    one made by another generator only with ``allow_other_generator``. Anything else is refused before
    any sample is made.
    """
    folder = Path(folder)
    key = generator["sha256"][:12]
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{folder} is a file, not a folder.", "Choose a folder for the samples.")
    if not (folder / INDEX).exists():
        if folder.exists() and any(folder.iterdir()):
            raise OutputError(f"{folder} holds other files and no sample index.", "Choose a new or empty folder for the samples.")
        index = {
            "format": FORMAT,
            "version": VERSION,
            "engine_version": __version__,
            "tile_size": generator["tile_size"],
            "classes": generator["classes"],
            "temperature": temperature,
            "generators": {key: generator},
            "samples": [],
        }
        try:
            for sub in ("tiles", "previews"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot create the sample folder {folder} ({exc}).", "Choose a writable folder.") from exc
        _write_index(folder, index)
        return key
    index = read_index(folder)
    if index["tile_size"] != generator["tile_size"] or index["classes"] != generator["classes"]:
        raise InputError(
            f"{folder} holds {index['tile_size']}-pixel samples of classes {', '.join(index['classes'])}; the generator "
            f"{generator['name']} makes {generator['tile_size']}-pixel tiles of classes {', '.join(generator['classes'])}.",
            "Generate into another folder: one folder holds samples of one shape.",
        )
    if key not in index["generators"]:
        if not allow_other_generator:
            made_by = ", ".join(g["name"] for g in index["generators"].values())
            raise InputError(
                f"{folder} holds samples of another generator ({made_by}).",
                "Generate into another folder, or allow mixing generators (--mix-generators).",
            )
        _update_index(folder, lambda idx: idx["generators"].setdefault(key, generator))
    return key


def add(folder: str | Path, generator_key: str, samples: list[NewSample]) -> list[str]:
    """Write ``samples`` (files first, then the index) and return their ids.

    The folder's lock is held throughout, so two generations into one folder never take the same ids; on
    any failure (a full disk, a cancel) this call's files are removed, so no file the index does not name
    stays."""
    folder = Path(folder)
    with held(folder / LOCK):
        index = read_index(folder)
        slick = slick_index(index["classes"])
        first = max((int(s["id"]) for s in index["samples"]), default=0) + 1
        ids = [f"{first + n:06d}" for n in range(len(samples))]
        try:
            for sample_id, s in zip(ids, samples):
                logits = _write_files(folder, index, sample_id, s.tile, s.logits)
                index["samples"].append({
                    "id": sample_id,
                    "generator": generator_key,
                    "seed": int(s.seed),
                    "batch_seeds": [int(v) for v in s.batch_seeds],
                    "solver": s.solver,
                    "steps": int(s.steps),
                    "device": s.device,
                    "threads": s.threads,
                    "kept": True,
                    "slick_fraction": None if slick is None else round(float((logits.argmax(0) == slick).mean()), 4),
                    "created": utc_now(),
                })
            _write_index(folder, index)
        except BaseException:
            for sample_id in ids:
                for path in _files(folder, sample_id):
                    path.unlink(missing_ok=True)
            raise
    return ids


def _files(folder: Path, sample_id: str) -> tuple[Path, Path]:
    return folder / "tiles" / f"{sample_id}.npz", folder / "previews" / f"{sample_id}.png"


def restore(folder: str | Path, sample_id: str, tile: np.ndarray, logits: np.ndarray) -> None:
    """Write the files of a sample the index already names (after they were lost)."""
    _write_files(Path(folder), read_index(folder), sample_id, tile, logits)


def read_sample(folder: str | Path, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """(tile uint8 H x W, logits float32 C x H x W) of one sample."""
    path = Path(folder) / "tiles" / f"{sample_id}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:  # a sample file never runs code
            return data["tile"], data["logits"].astype(np.float32)
    except (OSError, KeyError, ValueError) as exc:
        raise InputError(f"The sample file {path} is missing or damaged ({exc}).", "Restore it with: python -m engine samples regenerate.") from exc


def load_samples(folder: str | Path, n: Optional[int] = None, kept_only: bool = True) -> GeneratedSet:
    """The first ``n`` samples (all when None) in index order; discarded ones are left out unless
    ``kept_only`` is False. PyTorch is imported here, not with the module: looking after a sample folder
    (``samples summary``, ``keep``, ``discard``) needs none."""
    import torch

    index = read_index(folder)
    records = [s for s in index["samples"] if s["kept"] or not kept_only][:n]
    size, classes = index["tile_size"], index["classes"]
    tiles = np.zeros((len(records), 1, size, size), dtype=np.float32)
    logits = np.zeros((len(records), len(classes), size, size), dtype=np.float32)
    for i, record in enumerate(records):
        tiles[i, 0], logits[i] = read_sample(folder, record["id"])
    return GeneratedSet([r["id"] for r in records], torch.from_numpy(tiles), torch.from_numpy(logits), classes, index["temperature"])


def set_kept(folder: str | Path, ids: list[str], kept: bool) -> dict[str, Any]:
    """Keep or discard samples by id; an unknown id is an error and changes nothing."""
    known = {s["id"] for s in read_index(folder)["samples"]}
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise InputError(f"No sample {', '.join(unknown)} in {folder}.", "See the ids with: python -m engine samples summary.")
    wanted = set(ids)

    def mark(index: dict[str, Any]) -> None:
        for s in index["samples"]:
            if s["id"] in wanted:
                s["kept"] = kept

    _update_index(Path(folder), mark)
    result = summary(folder)
    return {"folder": str(folder), "changed": len(wanted), "kept": result["kept"], "total": result["total"]}


def summary(folder: str | Path) -> dict[str, Any]:
    """What the folder holds, with one line per sample for the plugin's sample browser."""
    folder = Path(folder)
    index = read_index(folder)
    samples = index["samples"]
    kept = [s for s in samples if s["kept"]]
    fractions = [s["slick_fraction"] for s in kept if s["slick_fraction"] is not None]
    return {
        "folder": str(folder),
        "version": index["version"],
        "tile_size": index["tile_size"],
        "classes": index["classes"],
        "temperature": index["temperature"],
        "generators": list(index["generators"].values()),
        "total": len(samples),
        "kept": len(kept),
        "discarded": len(samples) - len(kept),
        "mean_slick_fraction": round(float(np.mean(fractions)), 4) if fractions else None,
        "samples": [
            {
                "id": s["id"],
                "kept": s["kept"],
                "slick_fraction": s["slick_fraction"],
                "seed": s["seed"],
                "solver": s["solver"],
                "steps": s["steps"],
                "preview": str(folder / "previews" / f"{s['id']}.png"),
            }
            for s in samples
        ],
    }


def _write_files(folder: Path, index: dict[str, Any], sample_id: str, tile: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Write a sample's tile and preview; returns the logits as stored (float16)."""
    logits = logits.astype(np.float16)
    tile_path, preview_path = _files(folder, sample_id)
    _write(tile_path, _npz_bytes(tile=tile, logits=logits))
    slick = slick_index(index["classes"])
    soft = None if slick is None else _softmax(logits.astype(np.float32), index["temperature"])[slick]
    _write(preview_path, _preview_png(tile, soft))
    return logits


def _softmax(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = np.exp(z - z.max(axis=0, keepdims=True))
    return z / z.sum(axis=0, keepdims=True)


def _preview_png(tile: np.ndarray, slick: Optional[np.ndarray]) -> bytes:
    """The grey tile, blended towards red by the soft slick probability."""
    grey = tile.astype(np.float32)[..., None].repeat(3, axis=2)
    if slick is not None:
        alpha = (0.6 * slick)[..., None]
        grey = grey * (1 - alpha) + np.array([255.0, 0.0, 0.0]) * alpha
    image = Image.fromarray(grey.round().clip(0, 255).astype(np.uint8), "RGB")
    if max(image.size) > PREVIEW_MAX:
        image = image.resize((PREVIEW_MAX, PREVIEW_MAX), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> None:
    write_bytes(path, data, "Check the free space and permissions of the sample folder.")


def _write_index(folder: Path, index: dict[str, Any]) -> None:
    _write(folder / INDEX, json.dumps(index, indent=1).encode())


def _update_index(folder: Path, change: Callable[[dict[str, Any]], Any]) -> None:
    """Re-read, change, replace, holding the folder's lock: without it, a process that read the index just
    before another one replaced it would write back the old index and lose the other's change."""
    with held(folder / LOCK):
        index = read_index(folder)
        change(index)
        _write_index(folder, index)


def regenerate(
    folder: str | Path,
    ids: Optional[list[str]] = None,
    *,
    generator_path: Optional[str | Path] = None,
    device: Optional[str] = None,
    progress: Optional[Progress] = None,
) -> dict[str, Any]:
    """Make samples again from their records: files that were lost are restored, files that exist are
    compared bit for bit and never replaced.

    ``ids`` None: every sample whose tile file is missing. Each sample's batch is rerun on the device and
    with the CPU threads it was made with (unless ``device`` is given), with the generator named in the index (or
    ``generator_path``, which must be the same file by its hash).
    """
    from ..models.eager import pick_device  # PyTorch, which the folder's other actions never need
    from .joint_ddpm import sample, to_uint8
    from .jointnet import load_any

    progress = progress or silent()
    folder = Path(folder)
    index = read_index(folder)
    by_id = {s["id"]: s for s in index["samples"]}
    if ids:
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise InputError(f"No sample {', '.join(unknown)} in {folder}.", "See the ids with: python -m engine samples summary.")
        wanted = [by_id[i] for i in ids]
    else:
        wanted = [s for s in index["samples"] if not (folder / "tiles" / f"{s['id']}.npz").exists()]
    groups: dict[tuple, list[dict]] = {}
    for record in wanted:
        key = (record["generator"], tuple(record["batch_seeds"]), record["solver"], record["steps"], record["device"], record["threads"])
        groups.setdefault(key, []).append(record)
    identical, different, restored = [], [], []
    loaded: dict[tuple[str, str], tuple[Any, GeneratorCard]] = {}
    for done, ((key, batch, solver, steps, made_on, threads), records) in enumerate(groups.items()):
        progress.update("regenerating", done, len(groups), f"batch of seeds {batch[0]}-{batch[-1]}")
        entry = index["generators"][key]
        torch_device = pick_device(device or made_on)
        if (key, str(torch_device)) not in loaded:
            path = Path(generator_path or entry["path"])
            if generator_sha256(path) != entry["sha256"]:
                raise ModelError(f"{path} is not the generator that made these samples (its hash differs).", "Give the original file with --generator.")
            loaded[(key, str(torch_device))] = load_any(path, torch_device)
        net, card = loaded[(key, str(torch_device))]
        with cpu_threads(threads if torch_device.type == "cpu" else None):
            x, logits = sample(net, card, list(batch), solver, steps, lambda *_: progress.check())
        tiles = to_uint8(x[:, 0])
        for record in records:
            i = batch.index(record["seed"])
            tile, new_logits = tiles[i], logits[i].numpy()
            if (folder / "tiles" / f"{record['id']}.npz").exists():
                old_tile, old_logits = read_sample(folder, record["id"])
                same = np.array_equal(old_tile, tile) and np.array_equal(old_logits, new_logits.astype(np.float16).astype(np.float32))
                (identical if same else different).append(record["id"])
            else:
                restore(folder, record["id"], tile, new_logits)
                restored.append(record["id"])
    progress.update("done", 1, 1)
    return {"folder": str(folder), "checked": [r["id"] for r in wanted], "identical": identical, "different": different, "restored": restored}


@contextmanager
def cpu_threads(n: Optional[int]) -> Iterator[None]:
    """Run with ``n`` CPU threads (None: as is), as the sample was made."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def generator_sha256(path: Path) -> str:
    """The hash by which a folder's index knows the generator that made its samples."""
    if not path.is_file():
        raise ModelError(f"Generator file not found: {path}.", "Give its path with --generator.")
    return file_sha256(path)


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``samples summary|keep|discard|regenerate``: here, not with the generator's commands, so that
    looking after a folder imports no PyTorch; only ``regenerate`` loads it, to run the generator."""
    parser = subparsers.add_parser("samples")
    sub = parser.add_subparsers(dest="samples_command", required=True, metavar="ACTION")
    p = sub.add_parser("summary", help="what the folder holds, sample by sample")
    p.add_argument("folder", help="sample folder")
    p.set_defaults(func=lambda args, progress: summary(args.folder))
    for action, kept in (("keep", True), ("discard", False)):
        p = sub.add_parser(action, help=f"{action} samples: {'used' if kept else 'never used'} for training")
        p.add_argument("folder", help="sample folder")
        p.add_argument("ids", nargs="+", help="sample ids")
        p.set_defaults(func=lambda args, progress, kept=kept: set_kept(args.folder, args.ids, kept))
    p = sub.add_parser("regenerate", help="make samples again from their seeds: restore lost files, check the others")
    p.add_argument("folder", help="sample folder")
    p.add_argument("ids", nargs="*", help="sample ids (default: every sample whose files are missing)")
    p.add_argument("--generator", help="the generator file, if it moved since (checked by its hash)")
    p.add_argument("--device", help="device (default: the one each sample was made on, for identical bits)")
    p.set_defaults(func=_regenerate_cli)


def _regenerate_cli(args: argparse.Namespace, progress: Progress) -> dict:
    return regenerate(args.folder, args.ids, generator_path=args.generator, device=args.device, progress=progress)
