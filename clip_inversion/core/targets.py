"""Targets: a prompt string -> a weighted sum of embeddings -> one unit target embedding per model.

A target is written as terms separated by ``|``, each optionally followed by ``:weight`` (default 1)::

    a red circle                          # one prompt: exactly the plain objective
    a red circle:1 | a star:0.5 | blue:-0.3
    photos/cat.png:1 | a drawing:0.5      # an image file, encoded by the same CLIP
    saved/red.npy | a circle:0.5          # a saved embedding (.npy, .pt or .safetensors)

Negative weights push the image away from a term. The target embedding is the unit vector along the
weighted sum of the terms' unit embeddings. A prompt that ends in ``:<number>`` but is meant literally
needs an explicit ``:1`` after it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from clip_inversion.core.clip import FrozenCLIP
from clip_inversion.errors import UsageError, describe_load_error

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"})
EMBEDDING_SUFFIXES = frozenset({".npy", ".pt", ".safetensors"})


@dataclass(frozen=True)
class Term:
    """One term of a target: a prompt, an image file or a saved embedding, with its weight."""

    kind: Literal["text", "image", "embedding"]
    value: str
    weight: float = 1.0


def parse_target(spec: str) -> list[Term]:
    """Parse ``"a red circle:1 | a star:0.5 | blue:-0.3"`` into terms.

    Terms whose text ends in an image or embedding suffix are files (they must exist).

    Raises:
        UsageError: an empty term, a missing file, or no term with a positive weight.
    """
    terms = []
    for part in spec.split("|"):
        text, weight = part.strip(), 1.0
        head, sep, tail = text.rpartition(":")
        if sep:
            with contextlib.suppress(ValueError):  # otherwise a colon inside the prompt, not a weight
                text, weight = head.strip(), float(tail)
        if not text:
            raise UsageError(f"target {spec!r}: an empty term")
        suffix = Path(text).suffix.lower()
        kind = "image" if suffix in IMAGE_SUFFIXES else "embedding" if suffix in EMBEDDING_SUFFIXES else "text"
        if kind != "text" and not Path(text).is_file():
            raise UsageError(f"target {spec!r}: no {kind} file {text!r}")
        terms.append(Term(kind, text, weight))
    if not any(t.weight > 0 for t in terms):
        raise UsageError(f"target {spec!r}: needs at least one term with a positive weight")
    return terms


def load_image(path: str | Path) -> Tensor:
    """An image file -> ``(3, H, W)`` float in [0, 1] (alpha dropped, greyscale expanded)."""
    try:
        data = torch.frombuffer(bytearray(Path(path).read_bytes()), dtype=torch.uint8)
        return decode_image(data, mode=ImageReadMode.RGB).float() / 255
    except (OSError, RuntimeError) as e:
        raise UsageError(f"cannot read image {str(path)!r}: {e}") from e


def load_embedding(path: str | Path) -> Tensor:
    """A saved embedding -> ``(D,)`` float: a ``.npy`` array, a ``.pt`` tensor (``weights_only``) or a
    ``.safetensors`` file with one tensor (or one named ``embedding``); any leading dims must be 1."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            value = torch.from_numpy(np.load(path, allow_pickle=False))
        elif path.suffix == ".pt":
            value = torch.load(path, map_location="cpu", weights_only=True)
        else:
            from safetensors.torch import load_file

            tensors = load_file(path)
            value = tensors.get("embedding", next(iter(tensors.values())) if len(tensors) == 1 else None)
    except Exception as e:  # damaged files raise almost any type
        raise UsageError(f"cannot load the embedding {str(path)!r}: {describe_load_error(e)}") from e
    if not isinstance(value, Tensor) or value.numel() != value.shape[-1]:
        raise UsageError(f"{str(path)!r} is not one embedding (a tensor of shape (D,) or (1, D))")
    return value.float().flatten()


@torch.no_grad()
def encode_target(clip: FrozenCLIP, terms: list[Term]) -> Tensor:
    """The unit target embedding ``(D,)`` of ``terms`` under ``clip``: ``normalize(sum w_k * unit(e_k))``."""
    total = 0
    for term in terms:
        if term.kind == "text":
            emb = clip.encode_text([term.value])[0]
        elif term.kind == "image":
            emb = clip.encode_image(load_image(term.value)[None].to(clip.mean.device))[0]
        else:
            emb = load_embedding(term.value).to(clip.mean.device)
            expected = clip.encode_text(["x"]).shape[-1]
            if emb.shape[-1] != expected:
                raise UsageError(f"{term.value!r} has {emb.shape[-1]} dims, the model's embeddings {expected}")
        total = total + term.weight * F.normalize(emb, dim=-1)
    return F.normalize(total, dim=-1)


def encode_targets(clip: FrozenCLIP, specs: list[str]) -> Tensor:
    """``P`` target strings -> ``(P, D)`` unit targets; plain prompts are encoded exactly as ``encode_text``."""
    parsed = [parse_target(s) for s in specs]
    if all(len(t) == 1 and t[0].kind == "text" and t[0].weight > 0 for t in parsed):
        return clip.encode_text([t[0].value for t in parsed])  # the common case, batched
    return torch.stack([encode_target(clip, terms) for terms in parsed])
