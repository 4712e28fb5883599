"""Load any open_clip model, frozen, with its own preprocessing, and encode prompts and [0, 1] images.

A model is named the way open_clip names it, plus bundled models:

- a bundled name, registered with :func:`register_bundled` (the toy world registers the small models that ship
  with this package: ``toy-subject``, ``toy-judge``, ...; see docs/toy-models.md);
- an open_clip architecture and a pretrained tag: ``ViT-B-16`` + ``openai``. Where the tag's pretrained config
  says ``quick_gelu`` (OpenAI's weights), the model is built with QuickGELU, as those weights were trained;
- an open_clip architecture and a checkpoint file: ``ViT-B-16`` + ``/path/weights.safetensors`` (or ``.pt``,
  loaded with ``weights_only=True``); OpenAI's weights from a file need ``force_quick_gelu=True``;
- ``local-dir:PATH`` (``open_clip_config.json`` + weights) or ``hf-hub:ORG/REPO``.
"""

from __future__ import annotations

import difflib
import functools
import importlib.metadata
import logging
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from clip_inversion.errors import UsageError, describe_load_error

BUNDLED: dict[str, Path] = {}  # bundled name -> its local-dir folder, filled by register_bundled
PLUGINS = "clip_inversion.models"  # entry points whose import registers bundled models (the toy world's)

log = logging.getLogger(__name__)


def register_bundled(name: str, folder: Path) -> None:
    """Make ``name`` load the model in ``folder`` (``open_clip_config.json`` and weights, as ``local-dir:``)."""
    BUNDLED[name] = Path(folder)


@functools.cache
def bundled() -> dict[str, Path]:
    """The bundled names, once every package that ships models (an entry point of group ``PLUGINS``, such as
    the toy world) has registered its own. Loaded on first use, so that importing this module stays light."""
    for entry_point in importlib.metadata.entry_points(group=PLUGINS):
        entry_point.load()
    return BUNDLED


class CLIPLoadError(UsageError):
    """A model could not be loaded; the message says what to change."""


@dataclass
class CLIPSpec:
    """Which CLIP to load (``--model.clip.model_name``, ``--model.clip.pretrained``, ...).

    Args:
        model_name: a bundled name, an open_clip architecture, ``local-dir:PATH`` or ``hf-hub:ORG/REPO``.
        pretrained: with an architecture name: a pretrained tag or a checkpoint file. ``None`` gives random
            weights (only useful for timing).
        cache_dir: where downloaded weights are cached (default: the Hugging Face cache).
        image_mean: overrides the model's normalisation mean (needed for checkpoint files not trained with
            OpenAI's statistics).
        image_std: overrides the model's normalisation std.
        force_quick_gelu: use QuickGELU, as OpenAI's weights loaded from a file need (a pretrained tag whose
            config asks for it gets it without this).
    """

    model_name: str = "toy-subject"
    pretrained: str | None = None
    cache_dir: str | None = None
    image_mean: tuple[float, float, float] | None = None
    image_std: tuple[float, float, float] | None = None
    force_quick_gelu: bool = False

    @property
    def random_weights(self) -> bool:
        """Whether loading gives random weights: an open_clip architecture named without a tag or a file."""
        bundled_or_dir = self.model_name in bundled() or self.model_name.startswith(("local-dir:", "hf-hub:"))
        return self.pretrained is None and not bundled_or_dir

    @property
    def label(self) -> str:
        """A short human-readable name, as written to manifests: ``name`` or ``name:tag``."""
        if self.pretrained and not Path(self.pretrained).exists():
            return f"{self.model_name}:{self.pretrained}"
        return self.model_name if not self.pretrained else f"{self.model_name}:{Path(self.pretrained).name}"


class FrozenCLIP(nn.Module):
    """An open_clip model with every weight frozen, in eval mode for good, with its own preprocessing.

    Args:
        model: the open_clip model.
        tokenizer: its tokenizer.
        mean: ``(3,)`` normalisation mean.
        std: ``(3,)`` normalisation std.
        image_size: ``(H, W)`` input size of the image tower.
    """

    def __init__(self, model: nn.Module, tokenizer, mean: tuple, std: tuple, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.tokenizer = tokenizer
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)
        self.eval()

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Stays in eval mode whatever a trainer asks: the model is never trained."""
        return super().train(False)

    @property
    def context_length(self) -> int:
        return getattr(self.tokenizer, "context_length", 77)

    @torch.no_grad()
    def encode_text(self, prompts: list[str]) -> Tensor:
        """``N`` prompts -> ``(N, D)`` unit text embeddings (truncation to the context length is warned about)."""
        encode = getattr(self.tokenizer, "encode", None)
        if encode is not None:
            for prompt in prompts:
                if len(encode(prompt)) + 2 > self.context_length:
                    warnings.warn(
                        f"prompt {prompt!r} is longer than the model's {self.context_length} tokens and is truncated",
                        stacklevel=2,
                    )
        tokens = self.tokenizer(prompts).to(self.mean.device)
        return F.normalize(self.model.encode_text(tokens).float(), dim=-1)

    def encode_image(self, images: Tensor) -> Tensor:
        """Resize (bicubic), normalise and encode.

        Args:
            images: ``(N, 3, H, W)`` in [0, 1], any size.

        Returns:
            ``(N, D)`` unit image embeddings, differentiable with respect to ``images``.
        """
        if tuple(images.shape[-2:]) != self.image_size:
            shrinking = images.shape[-1] > self.image_size[1]
            images = F.interpolate(
                images, size=self.image_size, mode="bicubic", align_corners=False, antialias=shrinking
            )
        features = self.model.encode_image((images - self.mean) / self.std)
        return F.normalize(features.float(), dim=-1)


def load_clip(spec: CLIPSpec) -> FrozenCLIP:
    """Load a CLIP model, frozen, on the CPU.

    Raises:
        CLIPLoadError: unknown name or tag, missing file, or weights that cannot be downloaded; the
            message says what to do.
    """
    name, pretrained = spec.model_name, spec.pretrained
    if name in bundled():
        name, pretrained = f"local-dir:{BUNDLED[name]}", None
    kwargs = {"force_quick_gelu": spec.force_quick_gelu, "cache_dir": spec.cache_dir}
    if name.startswith("local-dir:"):
        if not (Path(name.removeprefix("local-dir:")) / "open_clip_config.json").is_file():
            raise CLIPLoadError(f"{name}: no open_clip_config.json there")
        model = _create(name, None, kwargs)
    elif name.startswith("hf-hub:"):
        model = _create_from_hub(name, None, kwargs, what=name)
    else:
        if name.replace("/", "-") not in open_clip.list_models():
            close = difflib.get_close_matches(name, [*BUNDLED, *open_clip.list_models()], n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(close)}?" if close else " See open_clip.list_models()."
            raise CLIPLoadError(f"unknown model name {name!r} (--model.clip.model_name).{hint}")
        if pretrained is None:
            log.warning("no pretrained weights for %s: the model is random (fine for timing, useless to invert)", name)
            model = _create(name, None, kwargs)
        elif pretrained in open_clip.list_pretrained_tags_by_model(name):
            if open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu"):
                kwargs["force_quick_gelu"] = True  # open_clip 3 only warns; these weights were trained with it
            model = _create_from_hub(name, pretrained, kwargs, what=f"{name} + {pretrained}")
        elif Path(pretrained).is_file():
            model = _create(name, pretrained, kwargs)
        else:
            tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
            raise CLIPLoadError(
                f"--model.clip.pretrained={pretrained!r} is neither a file nor a pretrained tag of {name} "
                f"(tags: {tags})"
            )
    cfg = model.visual.preprocess_cfg
    size = model.visual.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    with _root_logging_muted():
        tokenizer = open_clip.get_tokenizer(name, cache_dir=spec.cache_dir)
    return FrozenCLIP(model, tokenizer, spec.image_mean or cfg["mean"], spec.image_std or cfg["std"], size)


def _create(name: str, pretrained: str | None, kwargs: dict) -> nn.Module:
    try:
        with _root_logging_muted():
            return open_clip.create_model(name, pretrained=pretrained, weights_only=True, **kwargs)
    except Exception as e:  # deserialisers of damaged files raise almost any type: all mean "cannot load"
        what = f"{name} + {pretrained}" if pretrained else name
        raise CLIPLoadError(f"could not load {what}: {describe_load_error(e)}") from e


@contextmanager
def _root_logging_muted() -> Iterator[None]:
    """Keep open_clip's messages to the root logger (which configure it on first use) off the terminal where
    nothing else configured logging: a failure is reported once, by our own error, and random weights by
    our own warning."""
    root, handler = logging.getLogger(), logging.NullHandler()
    if root.handlers:  # logging is configured: messages go where it says
        yield
        return
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)


def _create_from_hub(name: str, pretrained: str | None, kwargs: dict, what: str) -> nn.Module:
    """Create a model whose weights come from the Hugging Face Hub; offline, only the local cache is tried."""
    from huggingface_hub import constants

    online = not constants.HF_HUB_OFFLINE and _hub_reachable()
    try:
        with _hub_offline(not online):
            return _create(name, pretrained, kwargs)
    except CLIPLoadError as e:
        if online:
            raise
        raise CLIPLoadError(
            f"the weights for {what} are not in the local cache and the Hugging Face Hub cannot be reached. "
            "Download them on a machine with internet into a cache directory and pass it with "
            "--model.clip.cache_dir (or set HF_HOME) with HF_HUB_OFFLINE=1, or pass a local checkpoint "
            "with --model.clip.pretrained=/path/to/weights.safetensors"
        ) from e


def _hub_reachable(timeout: float = 3.0) -> bool:
    from huggingface_hub import constants

    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


@contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """Make huggingface_hub use only its cache (it reads this flag at call time)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = before or offline
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before
