"""Image parameterisations: modules whose output is the batch of images being optimised.

Every parameterisation shares one interface (:class:`ImageParam`): built from one seed a prompt and a
side in pixels, ``forward()`` gives ``(P, 3, H, W)`` images in [0, 1]; ``upsample(size)`` grows them
into new parameters (the resolution schedule then rebuilds the optimizer); ``project_()`` runs after
each optimizer step; ``set_(images)`` makes ``forward()`` give chosen images (an init image);
``resize_for(shapes)`` takes a checkpoint's parameter shapes before its tensors load. Every parameter
has the prompts on its first dimension, so prompts never share a parameter.

Choose one from YAML::

    model:
      image:
        class_path: clip_inversion.core.image.FourierImage
        init_args: {decay: 1.0}
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_SIZE = 2048  # larger images are almost surely a typo: 2048 px ViT-B/16 copies need tens of GiB
Squash = Literal["sigmoid", "tanh", "clamp"]
_EPS = 1e-3  # keeps logit/atanh finite when an image is set to exactly 0 or 1


class ImageParam(nn.Module):
    """The interface of an image parameterisation (see the module docstring).

    Args:
        seeds: one seed a prompt; ``len(seeds)`` is the number of images ``P``. A prompt's start depends
            on its seed only, never on its batch.
        size: side in pixels.
    """

    def __init__(self, seeds: list[int], size: int) -> None:
        super().__init__()
        self.seeds, self._size = list(seeds), size

    @property
    def size(self) -> int:
        return self._size

    def forward(self) -> Tensor:  # pragma: no cover - abstract
        """Returns the ``(P, 3, H, W)`` images in [0, 1]."""
        raise NotImplementedError

    def upsample(self, size: int) -> None:
        """Grow to ``size`` keeping the picture (bicubic), as new parameters: rebuild the optimizer after.

        Bicubic overshoot is clamped to [0, 1] here, where ``set_`` needs it (squashed parameterisations).
        """
        self.set_(F.interpolate(self().detach(), size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1))

    def set_(self, images: Tensor) -> None:  # pragma: no cover - abstract
        """New parameters such that ``forward()`` gives ``images`` ``(P, 3, S, S)`` in [0, 1], at size ``S``."""
        raise NotImplementedError

    def set_picture_(self, picture: Tensor) -> None:
        """Start every image from ``picture`` ``(3, H, W)`` in [0, 1], resized (bicubic) to this size."""
        start = F.interpolate(picture[None], size=(self.size, self.size), mode="bicubic", antialias=True)
        self.set_(start.clamp(0, 1).expand(len(self.seeds), -1, -1, -1).to(self._device()))

    def project_(self) -> None:
        """Clamps to [0, 1] where ``forward()`` can leave it; nothing to do when it squashes to [0, 1]."""

    def resize_for(self, shapes: Mapping[str, torch.Size]) -> None:
        """Take empty parameters of a checkpoint's ``shapes`` (keys relative to this module)."""
        for name, shape in shapes.items():
            setattr(self, name, nn.Parameter(torch.empty(shape, device=self._device())))
        self._size = shapes[name][-1]

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    def _randn(self, shape: tuple[int, ...], std: float) -> Tensor:
        """``(P, *shape)`` Gaussian noise, each prompt's from its own seed."""
        return _stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) * std for s in self.seeds], shape)


class PixelImage(ImageParam):
    """Raw pixels, the reference parameterisation: one ``3 x size x size`` image a prompt.

    Each image starts uniform-random in [0, 1) from its own seed. ``project_`` clamps to [0, 1]; when it runs
    (before or after the optimizer's step) is the inverter's choice, so pixels may briefly leave [0, 1].
    """

    def __init__(self, seeds: list[int], size: int) -> None:
        super().__init__(seeds, size)
        start = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(s)) for s in seeds]
        self.pixels = nn.Parameter(torch.stack(start) if start else torch.empty(0, 3, size, size))

    @property
    def size(self) -> int:
        return self.pixels.shape[-1]

    def forward(self) -> Tensor:
        """Returns the ``(P, 3, H, W)`` images in [0, 1]."""
        return self.pixels

    def upsample(self, size: int) -> None:
        """Grow to ``size`` (bicubic, not clamped, as the released loop does), as a new parameter."""
        self.set_(F.interpolate(self.pixels.detach(), size=(size, size), mode="bicubic", align_corners=False))

    @torch.no_grad()
    def set_(self, images: Tensor) -> None:
        self.pixels = nn.Parameter(images.detach().clone())

    @torch.no_grad()
    def project_(self) -> None:
        """Clamp to [0, 1]."""
        self.pixels.clamp_(0, 1)


# An orthonormal opponent-colour basis (luminance, red-green, yellow-blue) with most of the variance on
# luminance, as in natural images: decorrelated channels -> RGB is ``_COLOUR @ channels``.
_OPPONENT = torch.tensor(
    [
        [1 / math.sqrt(3), 1 / math.sqrt(3), 1 / math.sqrt(3)],
        [1 / math.sqrt(2), -1 / math.sqrt(2), 0.0],
        [1 / math.sqrt(6), 1 / math.sqrt(6), -2 / math.sqrt(6)],
    ]
)
_COLOUR = _OPPONENT.T @ torch.diag(torch.tensor([1.0, 0.5, 0.5]))


class FourierImage(ImageParam):
    """A Fourier-space image with ``1/f^decay`` scaling and decorrelated colour, squashed by a sigmoid.

    The parameters are the real FFT coefficients of three decorrelated colour channels; each frequency
    is scaled by ``1/max(f, 1/size)^decay``, so that a step changes low frequencies more than high ones,
    the channels are mixed into RGB by a fixed opponent-colour matrix and a sigmoid maps them to [0, 1].

    Args:
        seeds: one seed a prompt.
        size: side in pixels.
        decay: exponent of the ``1/f`` scaling (0 gives a plain Fourier basis).
        std: standard deviation of the random start, in scaled coefficients.
        squash: ``"sigmoid"``, or ``"clamp"`` (``x + 0.5`` clamped to [0, 1]: saturated colours keep their
            gradient until they reach the edge).
    """

    def __init__(
        self, seeds: list[int], size: int, decay: float = 1.0, std: float = 0.01, squash: Squash = "sigmoid"
    ) -> None:
        super().__init__(seeds, size)
        self.decay, self.squash = decay, squash
        self.spectrum = nn.Parameter(self._randn((3, size, size // 2 + 1, 2), std))

    def _scale(self, size: int, device: torch.device) -> Tensor:
        """``(size, size // 2 + 1)`` frequency scaling, normalised to unit root-mean-square."""
        fy = torch.fft.fftfreq(size, device=device)[:, None]
        fx = torch.fft.rfftfreq(size, device=device)[None, :]
        scale = (fy**2 + fx**2).sqrt().clamp(min=1 / size) ** -self.decay
        return scale / scale.pow(2).mean().sqrt()

    def forward(self) -> Tensor:
        """Returns the ``(P, 3, H, W)`` images in [0, 1]."""
        spectrum = torch.view_as_complex(self.spectrum) * self._scale(self._size, self.spectrum.device)
        channels = torch.fft.irfft2(spectrum, s=(self._size, self._size), norm="ortho")
        return _squash(torch.einsum("cd,pdhw->pchw", _COLOUR.to(channels), channels), self.squash)

    @torch.no_grad()
    def set_(self, images: Tensor) -> None:
        size = images.shape[-1]
        rgb = _unsquash(images, self.squash)
        channels = torch.einsum("cd,pdhw->pchw", torch.linalg.inv(_COLOUR).to(rgb), rgb)
        spectrum = torch.fft.rfft2(channels, norm="ortho") / self._scale(size, images.device)
        self.spectrum = nn.Parameter(torch.view_as_real(spectrum).contiguous())
        self._size = size

    def resize_for(self, shapes: Mapping[str, torch.Size]) -> None:
        self.spectrum = nn.Parameter(torch.empty(shapes["spectrum"], device=self._device()))
        self._size = shapes["spectrum"][-3]


class PyramidImage(ImageParam):
    """A multi-resolution pyramid: a sum of tensors from 1 px to full size, squashed by ``(tanh + 1) / 2``.

    Level ``i`` is a ``(P, 3, s_i, s_i)`` tensor (the last is the full size), weighted by ``s_i^-decay``
    and upsampled to full size before the sum, so coarse structure costs few parameters and forms first
    (``decay > 0`` slows the fine levels, as ``1/f`` does in Fourier space). The sides double from 1 px
    (``spacing: null``) or grow by ``spacing`` pixels (1, 5, 9, ... for 4). Direct Ascent Synthesis (Fort &
    Whitaker, 2025) is ``std: 0, decay: 0, spacing: 4, mode: bicubic`` with tanh, under random crops and
    noise (``configs/recipes/das.yaml``). ``upsample`` adds zero levels up to the new size, so the picture
    is kept.

    Args:
        seeds: one seed a prompt.
        size: side in pixels.
        std: standard deviation of each level's random start (0: every level starts at zero, a grey image).
        decay: the levels' weights are ``side^-decay`` (0: a plain sum).
        squash: ``"tanh"`` (``(tanh + 1) / 2``), or ``"clamp"`` (``x + 0.5`` clamped to [0, 1]).
        spacing: the sides' step in pixels; ``None``: octaves (1, 2, 4, ...).
        mode: how a level is resized to full size, ``"bilinear"`` or ``"bicubic"`` (1 px levels are constant).
    """

    def __init__(
        self,
        seeds: list[int],
        size: int,
        std: float = 0.1,
        decay: float = 0.0,
        squash: Squash = "tanh",
        spacing: int | None = None,
        mode: Literal["bilinear", "bicubic"] = "bilinear",
    ) -> None:
        super().__init__(seeds, size)
        if spacing is not None and spacing < 1:
            raise ValueError(f"PyramidImage spacing must be a positive number of pixels or null, got {spacing}")
        self.decay, self.squash, self.spacing, self.mode = decay, squash, spacing, mode
        sizes = _level_sizes(1, size, spacing)
        self.levels = nn.ParameterList(nn.Parameter(self._randn((3, s, s), std)) for s in sizes)

    def forward(self) -> Tensor:
        """Returns the ``(P, 3, H, W)`` images in [0, 1]."""
        total = 0
        for level in self.levels:
            up = level if level.shape[-1] == self._size else _resize(level, self._size, self.mode)
            total = total + up * level.shape[-1] ** -self.decay
        return _squash(total, self.squash)

    @torch.no_grad()
    def upsample(self, size: int) -> None:
        """Add zero levels up to ``size``; the existing levels are kept (new parameters all the same)."""
        levels = [nn.Parameter(level.detach().clone()) for level in self.levels]
        top = levels[-1].shape[-1]
        for s in _level_sizes(top, size, self.spacing)[1:]:
            levels.append(nn.Parameter(levels[-1].new_zeros(len(levels[-1]), 3, s, s)))
        self.levels, self._size = nn.ParameterList(levels), size

    @torch.no_grad()
    def set_(self, images: Tensor) -> None:
        """Zero the coarse levels and put the whole image in the finest."""
        size = images.shape[-1]
        finest = _unsquash(images, self.squash) * size**self.decay
        coarse = [finest.new_zeros(len(finest), 3, s, s) for s in _level_sizes(1, size, self.spacing)[:-1]]
        self.levels = nn.ParameterList(nn.Parameter(t) for t in [*coarse, finest.contiguous()])
        self._size = size

    def resize_for(self, shapes: Mapping[str, torch.Size]) -> None:
        device = self._device()
        ordered = sorted(shapes.items(), key=lambda kv: int(kv[0].split(".")[-1]))
        self.levels = nn.ParameterList(nn.Parameter(torch.empty(s, device=device)) for _, s in ordered)
        self._size = ordered[-1][1][-1]


class ImplicitImage(ImageParam):
    """An implicit image: a small Fourier-feature MLP from pixel coordinates to RGB, one network a prompt.

    Pixel centres ``(x, y)`` in [0, 1) become features ``sin, cos(2 pi b . (x, y))`` of ``features`` random
    frequencies ``b`` (cycles per image side, drawn ``N(0, scale^2)`` from the prompt's seed), then ``depth``
    ReLU layers of ``width`` units and a sigmoid give RGB. Every weight has the prompts on its first
    dimension and the layers are batched matrix products, so the prompts never share a parameter.

    Coarse to fine: a frequency is used only once the image is at least ``per_cycle`` pixels a cycle wide
    (``|b| <= size / per_cycle``), so a resolution schedule (16 -> 32 -> 64 px) lets in the higher
    frequencies as the run goes. A frequency's first-layer weights start at zero and get no gradient while
    it is off, so switching it on leaves the picture unchanged. ``upsample`` renders the same networks at
    the new size (the parameters stay; the resolution schedule rebuilds the optimizer anyway).

    Args:
        seeds: one seed a prompt.
        size: side in pixels.
        features: random frequencies a prompt (each gives a sine and a cosine feature).
        scale: standard deviation of the frequencies, in cycles per image side.
        width: units of each hidden layer.
        depth: hidden layers.
        per_cycle: pixels a cycle from which a frequency is used.
    """

    def __init__(
        self,
        seeds: list[int],
        size: int,
        features: int = 32,
        scale: float = 6.0,
        width: int = 32,
        depth: int = 2,
        per_cycle: float = 4.0,
    ) -> None:
        super().__init__(seeds, size)
        if min(features, width, depth) < 1 or scale <= 0 or per_cycle <= 0:
            raise ValueError("ImplicitImage needs features, width, depth >= 1 and positive scale and per_cycle")
        self.per_cycle = per_cycle
        ins, outs = [2 * features, *[width] * depth], [*[width] * depth, 3]
        # Each prompt draws from its own generator (frequencies, then each layer's weights, He-scaled where a
        # ReLU follows), so its start does not depend on its batch.
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.register_buffer(
            "frequencies", _stack([torch.randn(features, 2, generator=g) * scale for g in gens], (features, 2))
        )
        self.register_buffer("coords", _pixel_centres(size))
        gains = [math.sqrt(2 / i) for i in ins[:-1]] + [math.sqrt(1 / ins[-1])]
        weights = [
            _stack([torch.randn(i, o, generator=g) * a for g in gens], (i, o)) for i, o, a in zip(ins, outs, gains)
        ]
        weights[0] = weights[0] * self._feature_mask(size).unsqueeze(-1)  # frequencies not yet on start at zero
        self.weights = nn.ParameterList(nn.Parameter(w) for w in weights)
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(len(seeds), o)) for o in outs)

    @property
    def size(self) -> int:
        return self.coords.shape[0]

    def _feature_mask(self, size: int) -> Tensor:
        """``(P, 2 F)`` 1 for the sine and cosine features whose frequency is on at ``size`` pixels, else 0."""
        on = (self.frequencies.norm(dim=-1) <= size / self.per_cycle).to(self.frequencies.dtype)
        return torch.cat([on, on], dim=-1)

    def forward(self) -> Tensor:
        """Returns the ``(P, 3, H, W)`` images in [0, 1]."""
        size = self.size
        angles = 2 * math.pi * torch.einsum("nk,pfk->pnf", self.coords.flatten(0, 1), self.frequencies)
        x = torch.cat([angles.sin(), angles.cos()], dim=-1) * self._feature_mask(size).unsqueeze(1)
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias.unsqueeze(1), x, weight)  # (P, H W, out)
            x = torch.relu(x) if i < len(self.weights) - 1 else torch.sigmoid(x)
        return x.transpose(1, 2).reshape(len(x), 3, size, size)

    @torch.no_grad()
    def upsample(self, size: int) -> None:
        """Render the same networks at ``size``: the parameters stay, higher frequencies may switch on."""
        self.coords = _pixel_centres(size).to(self.coords)

    def set_(self, images: Tensor, steps: int = 300, lr: float = 0.01) -> None:
        """Fit the networks to ``images`` ``(P, 3, S, S)`` in [0, 1] (``steps`` Adam steps on the squared error):
        ``forward()`` then gives them approximately, at size ``S``."""
        self.upsample(images.shape[-1])
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        target = images.detach().to(self.coords)
        with torch.enable_grad():
            for _ in range(steps):
                optimizer.zero_grad()
                (self() - target).pow(2).sum().backward()
                optimizer.step()

    def resize_for(self, shapes: Mapping[str, torch.Size]) -> None:
        device = self.coords.device
        for name in ("frequencies", "coords"):
            setattr(self, name, torch.empty(shapes[name], device=device))
        for name in ("weights", "biases"):
            ordered = sorted((int(k.split(".")[-1]), v) for k, v in shapes.items() if k.startswith(f"{name}."))
            setattr(self, name, nn.ParameterList(nn.Parameter(torch.empty(v, device=device)) for _, v in ordered))


def _squash(x: Tensor, kind: Squash) -> Tensor:
    """Unbounded values -> [0, 1]; ``(tanh + 1) / 2`` is ``sigmoid(2x)``."""
    if kind == "clamp":
        return (x + 0.5).clamp(0, 1)
    return torch.sigmoid(2 * x if kind == "tanh" else x)


def _unsquash(images: Tensor, kind: Squash) -> Tensor:
    """The inverse of :func:`_squash` on ``images`` in [0, 1] (kept off 0 and 1 where it is infinite)."""
    if kind == "clamp":
        return images - 0.5
    logit = torch.logit(images.clamp(_EPS, 1 - _EPS))
    return logit / 2 if kind == "tanh" else logit


def _level_sizes(start: int, size: int, spacing: int | None = None) -> list[int]:
    """``start, 2 start, 4 start, ...`` (``spacing`` None) or ``start, start + spacing, ...`` below ``size``,
    then ``size`` itself."""
    sizes = [start]
    while (sizes[-1] * 2 if spacing is None else sizes[-1] + spacing) < size:
        sizes.append(sizes[-1] * 2 if spacing is None else sizes[-1] + spacing)
    return [*sizes, size] if sizes[-1] != size else sizes


def _stack(tensors: list[Tensor], shape: tuple[int, ...]) -> Tensor:
    """``(P, *shape)`` from ``P`` tensors of ``shape`` (``P`` may be 0)."""
    return torch.stack(tensors) if tensors else torch.empty(0, *shape)


def _pixel_centres(size: int) -> Tensor:
    """``(size, size, 2)`` the ``(x, y)`` centres of the pixels, in [0, 1)."""
    centres = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    return torch.stack([x, y], dim=-1)


def _resize(x: Tensor, size: int, mode: str = "bilinear") -> Tensor:
    if x.shape[-1] == 1:  # a constant: bicubic and bilinear agree, without the cost
        return x.expand(*x.shape[:-2], size, size)
    return F.interpolate(x, size=(size, size), mode=mode, align_corners=False)
