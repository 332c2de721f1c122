"""The model registry and the model file format.

A model file is one ``.safetensors`` file: the weights plus a JSON *card* in the file's metadata that
holds everything needed to rebuild and use the network (architecture and its arguments, classes, tile
and pixel size, normalisation, polarisation and mode, provenance, scores). Loading rebuilds the class
from the card and never executes code from the file. Networks are always built without downloading
anything; pretrained encoder weights come from a local file (``load_encoder_weights``).
"""

from __future__ import annotations

import importlib
import json
import os
import pickle
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Optional, Protocol, runtime_checkable

from safetensors import SafetensorError, safe_open

from .. import __version__
from ..atomic import staged
from ..contract import BUNDLED_DIR, DEFAULT_MIN_AREA_KM2, STAGING_PREFIX
from ..data.bundled import scenes_named
from ..errors import InputError, ModelError, OutputError
from ..machine import file_sha256
from ..scenes.fingerprint import scene_fingerprint

if TYPE_CHECKING:
    import torch

CARD_KEY = "slick_mapper_card"
GENERATOR_CARD_KEY = "slick_mapper_generator"
"""Sample generators (engine/generation/joint_ddpm.py) keep their card under their own key, so that no generator is
ever listed or loaded as a segmentation model."""
BINARY_CLASSES = ["water", "slick"]
OSD_CLASSES = ["sea", "oil", "look-alike", "ship", "land"]


def slick_index(classes: list[str]) -> Optional[int]:
    """The slick class among ``classes`` (``slick``, or the OSD dataset's ``oil``); None when there is none."""
    for name in ("slick", "oil"):
        if name in classes:
            return classes.index(name)
    return None
"""The five classes of the Oil Spill Detection dataset used by the DAKTer paper."""

ARCHITECTURES: dict[str, str] = {
    "deeplabv3": "segmentation_models_pytorch:DeepLabV3",
    "deeplabv3plus": "segmentation_models_pytorch:DeepLabV3Plus",
    "unet": "segmentation_models_pytorch:Unet",
    "unet_contrast": "engine.models.contrast:ContrastUnet",
    "segformer": "segmentation_models_pytorch:Segformer",
    "samlora": "engine.models.samlora:SamLoRA",
    "saross": "engine.models.saross:SarossNet",
    "darkspot": "engine.models.darkspot:DarkSpot",
    "ensemble": "engine.models.ensemble:Ensemble",
}
"""Name -> ``module:class`` of the network, all built as smp's are. The paper's models are ``deeplabv3`` with ``resnet50``
or ``resnet101``, ``samlora`` with ``samvit_base_patch16`` or ``samvit_large_patch16``, and ``saross`` (SAROSS-Net,
engine/models/saross.py) with ``resnet34`` or, on CUDA with its package, ``mamba_vision_B``; ``darkspot`` is the
classical adaptive-threshold detector, fitted rather than trained (engine/models/darkspot.py); ``unet_contrast`` a U-Net
also fed each pixel's local darkness (engine/models/contrast.py); ``ensemble`` several networks of one recipe and
their mean logit (engine/models/ensemble.py). Named, not imported:
the classes need PyTorch (seconds to import), and reading or listing cards, which light commands do, needs none."""


def architecture(name: str) -> Callable[..., torch.nn.Module]:
    """The network class ``ARCHITECTURES`` names, imported now."""
    module, cls = ARCHITECTURES[name].split(":")
    return getattr(importlib.import_module(module), cls)


DEFAULT_MODEL = BUNDLED_DIR / "slick_unet_r18_dlv3r18_25m.safetensors"
"""The product's model: the light U-Net (``LIGHT_MODEL``) beside a DeepLabV3-R18 that learnt synthetic scenes only, as
one model (their mean logit, ``pretrain.ensemble_models``), keeping slicks of at least 0.1 km² (its card's). Leave one
scene out over the real Arctic scenes measured this pairing above the U-Net alone, slick Dice 0.486 against 0.452 over
four seeds (docs/benchmark_pair_min_area.md), at 3.5 times the U-Net's time a tile (docs/benchmarks_xeon207_pair.md)."""
LIGHT_MODEL = BUNDLED_DIR / "slick_unet_r18_25m.safetensors"
"""The U-Net alone: the real-texture recipe on all five labelled Arctic scenes (``pretrain.DEFAULT_TRAIN_SCENES``), the
product's model's first member, listed beside it for a quick look at a fraction of its time."""
HELD_OUT_MODEL = BUNDLED_DIR / "evaluation" / "slick_unet_r18_25m_pool.safetensors"
"""The light U-Net's recipe on ``bundled.POOL`` alone, so that it never saw the demo's and the paper's test tiles: the
experiments' default parent, and the first member of ``DEMO_MODEL``. Outside the folder the model list reads, so an
analyst is offered the product's models, not these."""
DEMO_MODEL = BUNDLED_DIR / "evaluation" / "slick_unet_r18_dlv3r18_25m_pool.safetensors"
"""The product's model made the same way without the demo's tiles: ``HELD_OUT_MODEL`` beside the same synthetic-only
DeepLabV3-R18, its threshold placed on ``bundled.POOL``'s validation bands. ``make demo`` scores it."""
SYNTHETIC_MODEL = BUNDLED_DIR / "slick_unet_r18_25m_synthetic.safetensors"
"""Trained on synthetic scenes only: where real-texture training starts, and the transfer experiment's source."""


def user_models_dir() -> Path:
    """Where fine-tuned models go: ``$SLICK_MAPPER_MODELS`` or the XDG data folder."""
    env = os.environ.get("SLICK_MAPPER_MODELS")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "slick_mapper" / "models"


def check_new_model_file(path: Path) -> None:
    """Refuse now, not after an hour of training: a model file is always new, in a folder it can be written to."""
    if path.suffix != ".safetensors":
        raise InputError(f"Model files end in .safetensors; {path.name} does not.", f"Name it e.g. {path.stem}.safetensors.")
    if path.exists():
        raise OutputError(f"{path} exists already; a model file is never replaced.", "Choose a new file name.")
    folder = path.parent.resolve()
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write the model file {path}: {folder} is not writable.", f"Choose a writable folder, e.g. {user_models_dir()}.")


_MEASURED_ON = (
    ("validation_dice", "on its validation bands"),
    ("val_dice", "on its fine-tuning validation tiles"),
    ("synthetic_val_dice", "on synthetic validation scenes"),
    ("dice", "on the scenes it was fitted to"),
)
"""Card metrics that hold a slick Dice (``ModelCard.measured``), and what each was measured on."""


POS_WEIGHT_CAP = 100.0
"""The most a slick pixel's BCE term is weighted over a sea pixel's (``engine.models.losses``): a batch without
slick pixels would otherwise divide by zero, and one with a handful would let them swamp the loss."""


@dataclass
class ModelCard:
    """Everything a model file says about itself."""

    name: str
    architecture: str
    encoder: str
    classes: list[str] = field(default_factory=lambda: list(BINARY_CLASSES))
    in_channels: int = 1
    tile_size: int = 512
    pixel_size: float = 25.0
    polarisation: str = "HH"
    mode: str = "EW"
    normalisation: dict[str, Any] = field(default_factory=lambda: {"kind": "eq1_2sigma_db", "input_scale": 1 / 255})
    threshold: float = 0.5
    """Slick probability above which detection marks a pixel slick when the user gives no threshold. A
    fine-tuned model's is calibrated on its validation tiles (engine/jobs/finetune.py): the weighted loss and a
    few labels move a model's probabilities, so 0.5 is rarely where its Dice is best."""
    min_area_km2: float = DEFAULT_MIN_AREA_KM2
    """The smallest slick detection keeps when the user gives none. A model that fires on small dark specks is
    better cut higher (the U-Net paired with a DeepLabV3 scored best at 0.1 km² by leave one scene out,
    docs/benchmark_pair_min_area.md), so, like the threshold, the cut travels with the model it was measured for."""
    pos_weight_cap: float = POS_WEIGHT_CAP
    """The BCE slick-weight bound the model learnt its probabilities under: fine-tuning trains with the same one,
    so that the parent's threshold, which a fine-tuned model keeps, still cuts its probabilities where it should."""
    scene_thresholds: dict[str, float] = field(default_factory=dict)
    """Thresholds calibrated on an analyst's labels of particular scenes (``scenes.fingerprint``), which
    detection uses on those scenes only; ``threshold`` everywhere else (engine/jobs/finetune.py)."""
    taught_scenes: list[str] = field(default_factory=list)
    """Fingerprints of the scenes a fine-tuned model learnt from, when its weights are for those scenes only:
    on any other scene its parent detects (``weights_for``). Empty: its weights detect on every scene."""
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    """For a fine-tuned model: its parent file, the labels it learnt from and the scores before and after."""
    engine_version: str = __version__
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def out_channels(self) -> int:
        """Binary models predict one slick logit; multi-class ones a logit per class."""
        return 1 if len(self.classes) == 2 else len(self.classes)

    @property
    def slick_index(self) -> int:
        index = slick_index(self.classes)
        if index is None:
            raise ModelError(f"The model {self.name} has no slick class ({', '.join(self.classes)}).", "Choose a slick segmentation model.")
        return index

    @property
    def mirror_symmetric(self) -> bool:
        """True when mirroring a tile mirrors the prediction exactly, so mirror averaging would only cost time:
        the dark-spot detector's square, centred windows are; a trained network is not."""
        return self.architecture == "darkspot"

    @property
    def networks(self) -> list[str]:
        """Each network the model runs, as ``unet / tu-resnet18``: an ensemble's members in order (the card's own encoder
        field is its first member's), else the one network."""
        members = self.arch_kwargs.get("members") if self.architecture == "ensemble" else None
        return [f"{m['architecture']} / {m['encoder']}" for m in members] if members else [f"{self.architecture} / {self.encoder}"]

    @property
    def network(self) -> str:
        """What runs a tile, for a model list: the network, or an ensemble's members and how their logits meet."""
        if len(self.networks) == 1:
            return self.networks[0]
        return f"{self.arch_kwargs.get('fusion', 'mean')} of " + " and ".join(self.networks)

    @property
    def measured(self) -> Optional[str]:
        """The card's own slick Dice and what it was measured on, for a model list; None when it has none.

        Each way of making a model scores it on something else (the pretraining's validation bands, the
        fine-tuning's validation tiles, the dark-spot fit's own training scenes), and a bare "Dice" would
        read as a test score; none of these is one."""
        for key, what in _MEASURED_ON:
            value = self.metrics.get(key)
            if isinstance(value, (int, float)):
                return f"Dice {value:.2f} {what}"
        return None

    def threshold_for(self, scene: str | Path) -> tuple[float, str]:
        """(threshold, where it comes from) for detecting on ``scene`` without a threshold given."""
        own = self.scene_thresholds.get(scene_fingerprint(scene))
        return (own, "calibrated on labels of this scene") if own is not None else (self.threshold, "the model's")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelCard":
        known = {k: v for k, v in card_data(text).items() if k in cls.__dataclass_fields__}
        try:
            return cls(**known)
        except TypeError as exc:
            raise ModelError(f"The model card lacks {exc}.", "The file was not written by Slick Mapper, or is damaged.") from exc


def card_data(text: str) -> dict[str, Any]:
    """A card's JSON as a dictionary; anything else is a damaged or foreign file, said as such."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ModelError(f"The model card is not valid JSON ({exc}).", "The file was not written by Slick Mapper, or is damaged.") from exc
    if not isinstance(data, dict):
        raise ModelError("The model card is not a JSON object.", "The file was not written by Slick Mapper, or is damaged.")
    return data


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; reading it never executes anything, and a cut-off or damaged file
    is a ``ModelError``."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"The weights in {Path(path).name} cannot be read ({exc}).", "The file is damaged or incomplete; copy or export it again.") from exc


def build_model(card: ModelCard) -> torch.nn.Module:
    """The untrained network a card describes; never touches the network (``encoder_weights=None``)."""
    try:
        arch = architecture(card.architecture)
    except KeyError:
        raise ModelError(
            f"Unknown architecture {card.architecture!r}.", f"Known architectures: {', '.join(sorted(ARCHITECTURES))}."
        ) from None
    try:
        return arch(
            encoder_name=card.encoder,
            encoder_weights=None,
            in_channels=card.in_channels,
            classes=card.out_channels,
            **card.arch_kwargs,
        )
    except KeyError as exc:
        raise ModelError(f"Unknown encoder {card.encoder!r} for {card.architecture}.", "See smp's list of encoders.") from exc
    except TypeError as exc:
        raise ModelError(f"The card's arch_kwargs do not fit {card.architecture} ({exc}).", "Check arch_kwargs in the model card.") from exc


@runtime_checkable
class LoadsEncoderCheckpoints(Protocol):
    """A network whose encoder checkpoints are laid out differently from its own encoder (SamLoRA: SAM's
    official file or timm's, fitted to the tile size) and that loads them itself."""

    def load_encoder_checkpoint(self, state: dict[str, torch.Tensor], source: str) -> None: ...


def load_encoder_weights(model: torch.nn.Module, path: str | Path) -> None:
    """Load pretrained encoder weights (e.g. ImageNet, SAM) from a local file into ``model.encoder``.

    A ``LoadsEncoderCheckpoints`` network fits the file itself. For the others the file holds the encoder's
    own keys, and three-channel first convolutions are summed into one channel, as smp does for single-band input.
    """
    path = Path(path)
    state = _read_checkpoint(path)
    if isinstance(model, LoadsEncoderCheckpoints):
        model.load_encoder_checkpoint(state, path.name)
        return
    own = model.encoder.state_dict()
    for key, value in list(state.items()):
        if key in own and value.ndim == 4 and value.shape[1] == 3 and own[key].shape[1] == 1:
            state[key] = value.sum(dim=1, keepdim=True)
    missing, unexpected = model.encoder.load_state_dict(state, strict=False)
    if len(missing) == len(own):
        raise ModelError(f"{path.name} holds no weights for this encoder.", "Check that the file matches the encoder name.")


def _read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A flat dictionary of tensors from safetensors or a PyTorch file.

    Only encoder checkpoints published as PyTorch files (SAM's own) take the second way, with
    ``weights_only``: torch's restricted unpickler, which builds tensors and plain containers and refuses any
    other object, so a hostile file is refused rather than run. Model files are safetensors only."""
    if not path.is_file():
        raise ModelError(f"Encoder weights file not found: {path}.", "Give a local checkpoint (.safetensors, .pth or .pt).")
    import torch
    from safetensors.torch import load_file

    try:
        state = load_file(str(path)) if path.suffix == ".safetensors" else torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, OSError, RuntimeError, EOFError, KeyError, ValueError, TypeError, AttributeError, pickle.UnpicklingError) as exc:
        # torch.load of a file that is no PyTorch file fails in any of these ways, depending on its first bytes
        raise ModelError(f"{path.name} is not a readable checkpoint.", "Give a .safetensors file or a PyTorch state dict (.pth, .pt).") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path.name} does not hold a dictionary of weights.", "Give the state dict of an encoder or of a whole model.")
    return state


def save_model(model: torch.nn.Module, card: Any, path: str | Path, *, half: bool = False, card_key: str = CARD_KEY) -> Path:
    """Write weights + card (anything with ``to_json``) atomically; ``half`` stores float16 to keep bundled
    models small."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    with staged(path, "Choose a writable folder for the model file.") as tmp:
        save_file(state, tmp, metadata={card_key: card.to_json()})
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """A model file's safetensors metadata, without loading weights."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"Model file not found: {path}.", "Pick a model from the list, or check the path.")
    try:
        with safe_open(str(path), framework="numpy") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"{path.name} is not a readable model file ({exc}).", "Model files are .safetensors written by Slick Mapper.") from exc


def weights_for(path: str | Path, scene: str | Path) -> tuple[Path, str]:
    """(the model file whose weights detect on ``scene``, a note for the analyst when it is not ``path``).

    A few labels fine-tune a model toward the scenes they lie in, and away from others: on the real Arctic
    tiles a model fine-tuned on half of one scene lost 0.27 and 0.33 slick Dice on two others
    (docs/within_scene.md). So a model made for its labelled scenes only hands every other scene to its parent
    (and that one to its own, where it was fine-tuned on other scenes too). The parent is looked for where the
    lineage recorded it, then beside the model, then among the bundled models, and must be the very file it
    was fine-tuned from (its sha256); where it is not found the model's own weights detect, and the note says so."""
    path = Path(path)
    card = read_card(path)
    if not card.taught_scenes or scene_fingerprint(scene) in card.taught_scenes:
        return path, ""
    found = parent_file(path)
    if found is None:
        parent = card.lineage.get("parent") or {}
        return path, (f"this model's own, which were fine-tuned on other scenes: its parent {parent.get('name', '')} is no longer "
                      f"at {parent.get('path', '')} nor beside it, unchanged")
    resolved, _ = weights_for(found, scene)
    return resolved, f"{read_card(resolved).name}, the parent's: this model was fine-tuned on other scenes"


def parent_file(path: str | Path) -> Optional[Path]:
    """The file a fine-tuned model was fine-tuned from, where its lineage recorded it, beside the model, or among the
    bundled models, and only if it is that very file (its sha256); None for a model that was not fine-tuned or
    whose parent is gone or changed."""
    path = Path(path)
    parent = read_card(path).lineage.get("parent") or {}
    recorded = Path(parent.get("path", ""))
    return next((p for p in (recorded, path.parent / recorded.name, BUNDLED_DIR / recorded.name)
                 if recorded.name and p.is_file() and file_sha256(p) == parent.get("sha256")), None)


def scenes_learnt(path: str | Path) -> set[str]:
    """The bundled scenes the model at ``path``, or any model it was fine-tuned from, learnt from. A child's card
    records what its parent had learnt (``learnt_from``), so a parent file replaced later (a new bundled model) does
    not change the answer; a child without that record needs its parent file. Where neither says, the answer is
    unknown and a ``ModelError``: whether a score is on pixels the model learnt from must not be guessed."""
    card = read_card(path)
    named = scenes_named([card.provenance, card.lineage])
    parent = card.lineage.get("parent") or {}
    if not parent or "learnt_from" in parent:
        return named
    found = parent_file(path)
    if found is None:
        raise ModelError(f"{Path(path).name} was fine-tuned from {parent.get('name', 'a model')}, which is no longer at {parent.get('path', '')} "
                         "nor beside it, unchanged, and its card does not say what that model learnt from.",
                         "Put the parent model file back beside it, or use a model whose card records its training scenes.")
    return named | scenes_learnt(found)


def has_weights(path: str | Path) -> bool:
    """Whether a model file holds any tensor: a fitted model (the dark-spot detector) holds none, so there is
    nothing for fine-tuning to learn."""
    read_metadata(path)  # the typed errors for a missing or unreadable file
    with safe_open(str(path), framework="numpy") as f:
        return bool(list(f.keys()))


def read_card(path: str | Path) -> ModelCard:
    """The card alone, without loading weights: for listing models quickly."""
    path = Path(path)
    meta = read_metadata(path)
    if GENERATOR_CARD_KEY in meta:
        raise ModelError(f"{path.name} is a sample generator, not a segmentation model.", "Pick a segmentation model; generators are for `engine generate`.")
    if CARD_KEY not in meta:
        raise ModelError(f"{path.name} has no Slick Mapper card.", "It was not written by Slick Mapper; re-export it with save_model.")
    return ModelCard.from_json(meta[CARD_KEY])


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild the network from its card and load the weights (float32), in eval mode."""
    card = read_card(path)
    model = build_model(card)
    state = {k: v.float() if v.is_floating_point() else v for k, v in read_weights(path).items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(f"The weights in {Path(path).name} do not fit its card ({exc}).", "The file is damaged; export it again.") from exc
    return model.to(device).eval(), card


def remove_model(path: str | Path) -> dict[str, str]:
    """Delete a model made by fine-tuning from the user's models folder, and nothing else: bundled models ship with
    the product, and a model another one was fine-tuned from is refused, since that one hands the scenes it was not
    taught on to its parent (``weights_for``) and would lose it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"There is no model file at {path}.", "Refresh the model list: it may have been removed already.")
    folder = user_models_dir()
    if path.resolve().parent != folder.resolve():
        raise InputError(f"{path.name} is not in your models folder ({folder}): only models made by fine-tuning can be removed here.",
                         "Delete the file yourself if you mean to.")
    card = read_card(path)
    sha256 = file_sha256(path)
    children = [c.name for p, c in list_models() if p != path.resolve() and (c.lineage.get("parent") or {}).get("sha256") == sha256]
    if children:
        raise InputError(f"{card.name} is the parent of {', '.join(children)}, which detect with its weights on the scenes they "
                         "were not taught on; it was not removed.", "Remove those models first, or keep this one.")
    path.unlink()
    return {"removed": str(path), "name": card.name}


def list_models(extra_dirs: tuple[Path, ...] = ()) -> list[tuple[Path, ModelCard]]:
    """Installed models: the bundled default first, then the others by name."""
    found: dict[Path, ModelCard] = {}
    for folder in (BUNDLED_DIR, user_models_dir(), *extra_dirs):
        for path in sorted(Path(folder).glob("*.safetensors")) if Path(folder).is_dir() else []:
            if path.name.startswith(STAGING_PREFIX):
                continue
            try:
                found[path.resolve()] = read_card(path)
            except ModelError:
                continue
    return sorted(found.items(), key=lambda item: (item[0] != DEFAULT_MODEL.resolve(), item[1].name))
