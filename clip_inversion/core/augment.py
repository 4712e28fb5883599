"""The augmentation pipeline: ``copies`` randomly transformed views of every image, each prompt's draws its own.

The transforms are Kornia augmentations (or modules of this file), named from YAML by class path::

    augmentations:
      - class_path: kornia.augmentation.RandomAffine
        init_args: {degrees: 30, translate: [0.1, 0.1], scale: [0.7, 1.2], p: 0.5, padding_mode: border}
      - class_path: clip_inversion.core.augment.RandomColorShift
        init_args: {shift: 0.1, p: 0.5}

Randomness is counter-based: every number a step draws is a hash (SplitMix64) of the prompt's step key, the
copy and the number's index, computed with integer tensor ops on the images' device. A prompt therefore draws
the same augmentations in any batch and on any rank, every prompt's parameters come from one vectorised call
(no loop over prompts, no host synchronisation), and the step can be captured as one graph. Kornia's
``RandomAffine``, ``RandomHorizontalFlip``, ``ColorJitter`` and ``RandomGaussianNoise`` and this file's modules
are drawn this way (``ColorJitter`` in a fixed order, where Kornia shuffles it once a call); any other module
falls back to a loop over prompts with Kornia's own sampling (warned about once).
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable
from typing import NamedTuple

import kornia.augmentation as K
import torch
import torch.nn.functional as F
from kornia import enhance
from kornia.geometry.conversions import normalize_homography
from kornia.geometry.transform import warp_affine
from torch import Tensor, nn

from clip_inversion.errors import UsageError

log = logging.getLogger(__name__)

# SplitMix64's constants. Eager code hashes in int64 tensors whose products wrap modulo 2^64 (torch has no
# uint64 arithmetic). Compiled code holds each number as four 16-bit limbs (least significant first) instead:
# constants beyond int64's range and wrapping products break compilers (inductor's C++ code generation overflowed
# on them), while a limb product is below 2^32 and a column of them below 2^34. Both give the same bits; the
# limbs cost about 20 times the ops, which eager code cannot afford for the noise's million numbers a step.
_GAMMA = 0x9E3779B97F4A7C15
_MUL1 = 0xBF58476D1CE4E5B9
_MUL2 = 0x94D049BB133111EB
_MASK = 0xFFFF

Limbs = list[Tensor]


def _signed(constant: int) -> int:
    """A 64-bit constant as the int64 with its bits."""
    return constant - 2**64 if constant >= 2**63 else constant


def _shr(x: Tensor, bits: int) -> Tensor:
    """Logical right shift of int64 (``>>`` is arithmetic: mask the sign bits away)."""
    return (x >> bits) & ((1 << (64 - bits)) - 1)


def _mix_wrapping(x: Tensor) -> Tensor:
    """SplitMix64's finaliser on int64 whose products wrap: a well-mixed function of ``x``, elementwise."""
    x = (x ^ _shr(x, 30)) * _signed(_MUL1)
    x = (x ^ _shr(x, 27)) * _signed(_MUL2)
    return x ^ _shr(x, 31)


def _split(x: Tensor) -> Limbs:
    """``int64 -> 4 limbs``: its two's-complement bits, 16 at a time (``>>`` is arithmetic: the mask drops the
    sign bits)."""
    return [(x >> shift) & _MASK for shift in (0, 16, 32, 48)]


def _join(x: Limbs) -> Tensor:
    """``4 limbs -> int64`` (the top limb's high bit is the sign), without overflowing on the way."""
    top = torch.where(x[3] >= 1 << 15, x[3] - (1 << 16), x[3])
    return top * (1 << 48) + x[2] * (1 << 32) + x[1] * (1 << 16) + x[0]


def _carry(x: Limbs) -> Limbs:
    """Limbs of any size up to 2^62 -> 16-bit limbs of the same number modulo 2^64."""
    out = []
    carry = 0
    for limb in x:
        limb = limb + carry
        out.append(limb & _MASK)
        carry = limb >> 16
    return out


def _times(x: Limbs, constant: int, add: Tensor | int = 0) -> Limbs:
    """``x * constant + add`` modulo 2^64 (``add`` non-negative, below 2^61)."""
    c = [(constant >> shift) & _MASK for shift in (0, 16, 32, 48)]
    return _carry([sum(x[i] * c[k - i] for i in range(k + 1)) + (add if k == 0 else 0) for k in range(4)])


def _plus(x: Limbs, y: Limbs) -> Limbs:
    return _carry([a + b for a, b in zip(x, y)])


def _xor_shr(x: Limbs, bits: int) -> Limbs:
    """``x ^ (x >> bits)``, the shift logical, for 16 < bits < 32."""
    rest = bits - 16
    shifted = [(x[i + 1] >> rest) | ((x[i + 2] << (16 - rest)) & _MASK) for i in range(2)]
    shifted += [x[3] >> rest, torch.zeros_like(x[3])]
    return [a ^ b for a, b in zip(x, shifted)]


def _mix_limbs(x: Limbs) -> Limbs:
    """SplitMix64's finaliser on limbs."""
    x = _times(_xor_shr(x, 30), _MUL1)
    x = _times(_xor_shr(x, 27), _MUL2)
    return _xor_shr(x, 31)


def _stream(keys: Tensor, n: int, offset: int = 0) -> Tensor:
    """``(...)`` int64 keys -> ``(..., n)`` int64: numbers ``offset .. offset + n - 1`` of each key's stream,
    ``mix(key + (offset + i + 1) * GAMMA)``."""
    counter = torch.arange(offset + 1, offset + n + 1, device=keys.device, dtype=torch.int64)
    if torch.compiler.is_compiling():
        return _join(_mix_limbs(_plus(_split(keys.unsqueeze(-1)), _times(_split(counter), _GAMMA))))
    return _mix_wrapping(keys.unsqueeze(-1) + counter * _signed(_GAMMA))


def step_keys(seeds: Tensor, step: Tensor | int) -> Tensor:
    """One key a prompt and step: ``(P,)`` int64 prompt seeds and a step number (non-negative, below 2^61) ->
    ``(P,)`` int64, ``mix(seed * GAMMA + step)``."""
    if torch.compiler.is_compiling():
        return _join(_mix_limbs(_times(_split(seeds), _GAMMA, add=step)))
    return _mix_wrapping(seeds * _signed(_GAMMA) + step)


def uniforms(keys: Tensor, n: int, stream: int = 0) -> Tensor:
    """``(N,)`` int64 keys -> ``(N, n)`` float32 uniforms in [0, 1), a function of (key, stream, index) only:
    the top 24 bits of each number."""
    return _shr(_stream(keys, n, stream << 40), 40).to(torch.float32) / 2**24


def _between(u: Tensor, low: float | Tensor, high: float | Tensor) -> Tensor:
    return low + (high - low) * u


class RandomColorShift(nn.Module):
    """Plug-In Inversion's colour shift ``x * exp(s) + m``, per image and channel.

    Args:
        shift: ``m ~ U(-shift, shift)`` and ``s ~ U(-shift, shift)``.
        p: probability of shifting each image.
    """

    draws = 7  # uniforms a view: applied?, three means, three log-scales

    def __init__(self, shift: float = 0.1, p: float = 1.0) -> None:
        super().__init__()
        self.shift, self.p = shift, p

    def params(self, u: Tensor) -> dict[str, Tensor]:
        """The shift of each view from ``u`` ``(N, 7)`` uniforms: ``batch_prob`` ``(N,)`` and ``mean``, ``log_scale``
        ``(N, 3)`` (zero where a view is not shifted)."""
        applied = u[:, 0] < self.p
        mean, log_scale = (_between(u[:, 1:], -self.shift, self.shift) * applied[:, None]).chunk(2, dim=1)
        return {"batch_prob": applied, "mean": mean, "log_scale": log_scale}

    def forward(self, images: Tensor, u: Tensor | None = None) -> Tensor:
        """``(N, 3, H, W) -> (N, 3, H, W)``; values may leave [0, 1], as in Plug-In Inversion.

        ``u``: ``(N, 7)`` uniforms in [0, 1) to draw from (default: ``torch.rand``).
        """
        u = torch.rand(len(images), self.draws, device=images.device) if u is None else u
        return self.apply(images, self.params(u.to(images.dtype)))

    @staticmethod
    def apply(images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``(N, 3, H, W)`` images shifted by :meth:`params`."""
        return images * params["log_scale"].exp()[..., None, None] + params["mean"][..., None, None]


class RandomResizedCrop(nn.Module):
    """A random crop of ``scale`` of the area and aspect ``ratio``, resized (bilinear) back to the image's size.

    The crop is drawn as Kornia's (and torchvision's) ``RandomResizedCrop`` draws it: up to 10 candidate
    (area, log-aspect) pairs, the first that fits inside the image, else the whole image; its position is
    uniform over the places it fits. Unlike ``kornia.augmentation.RandomResizedCrop``, the output keeps each
    input's own size, so the same setting fits any model and any stage of a resolution schedule. Images are
    square here, so the aspect ratio of the crop's sides in pixels is that of its fractions of the sides.

    Args:
        scale: range of the crop's area, as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height), drawn log-uniformly.
        p: probability of cropping each image.
    """

    tries = 10
    draws = 3 + 2 * tries  # applied?, tries x (area, log-ratio), x, y

    def __init__(
        self, scale: tuple[float, float] = (0.6, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3), p: float = 1.0
    ) -> None:
        super().__init__()
        if not 0 < scale[0] <= scale[1] <= 1 or not 0 < ratio[0] <= ratio[1]:
            raise UsageError(f"RandomResizedCrop needs 0 < scale <= 1 and 0 < ratio, got {scale}, {ratio}")
        self.scale, self.ratio, self.p = scale, ratio, p

    def params(self, u: Tensor) -> dict[str, Tensor]:
        """The crop of each view from ``u`` ``(N, 23)`` uniforms: ``batch_prob`` ``(N,)``, the crop's ``size``
        ``(N, 2)`` (width, height) as fractions of the image's sides in (0, 1], and its ``centre`` ``(N, 2)`` in
        [-1, 1] coordinates."""
        n = self.tries
        area = _between(u[:, 1 : 1 + n], *self.scale)
        log_ratio = _between(u[:, 1 + n : 1 + 2 * n], math.log(self.ratio[0]), math.log(self.ratio[1]))
        width, height = (area * log_ratio.exp()).sqrt(), (area / log_ratio.exp()).sqrt()
        fits = (width <= 1) & (height <= 1)
        first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # the first candidate that fits (0 if none)
        any_fits = fits.any(dim=1)
        width = torch.where(any_fits, width.gather(1, first)[:, 0], 1.0)
        height = torch.where(any_fits, height.gather(1, first)[:, 0], 1.0)
        xy = u[:, 1 + 2 * n : 3 + 2 * n]
        size = torch.stack([width, height], -1)
        return {"batch_prob": u[:, 0] < self.p, "size": size, "centre": (xy * 2 - 1) * (1 - size)}

    def forward(self, images: Tensor, u: Tensor | None = None) -> Tensor:
        """``(N, C, H, W) -> (N, C, H, W)``; ``u``: ``(N, 23)`` uniforms (default: ``torch.rand``)."""
        u = torch.rand(len(images), self.draws, device=images.device) if u is None else u
        return self.apply(images, self.params(u.to(images.dtype)))

    @staticmethod
    def apply(images: Tensor, params: dict[str, Tensor]) -> Tensor:
        """``(N, C, H, W)`` images cropped as :meth:`params` says and resized back to their size."""
        applied = params["batch_prob"][:, None]
        size = torch.where(applied, params["size"], 1.0)
        centre = torch.where(applied, params["centre"], 0.0)
        zero = torch.zeros_like(size[:, 0])
        theta = torch.stack(
            [torch.stack([size[:, 0], zero, centre[:, 0]], -1), torch.stack([zero, size[:, 1], centre[:, 1]], -1)],
            dim=1,
        )  # (N, 2, 3): output coordinates in [-1, 1] -> input coordinates of the crop
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def build_augmentations(specs: list[dict | nn.Module] | None) -> list[nn.Module] | None:
    """Modules from YAML's ``{class_path, init_args}`` specs (modules are kept; ``None`` stays ``None``).

    Raises:
        UsageError: a spec names no class that can be imported, or arguments it does not take.
    """
    try:
        return None if specs is None else [s if isinstance(s, nn.Module) else _instantiate(s) for s in specs]
    except (ImportError, AttributeError, TypeError, ValueError, KeyError) as e:
        raise UsageError(
            f"--model.augmentations: {e} (each needs a full class_path, e.g. kornia.augmentation.RandomAffine)"
        ) from e


def _instantiate(spec: dict) -> nn.Module:
    module, _, name = spec["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**spec.get("init_args", {}))


def reference_augmentations() -> list[nn.Module]:
    """The authors' pipeline: one random affine warp, applied to each copy with probability 0.5."""
    return [K.RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(0.7, 1.2), p=0.5, padding_mode="border")]


def affine_params(affine: K.RandomAffine, u: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
    """Kornia's parameters of ``affine`` for ``N`` views of ``size`` ``(H, W)``, drawn from ``u`` ``(N, 8)``.

    The same distributions as Kornia's own sampler; the dictionary is what ``affine(views, params=...)`` takes.
    """
    gen, (height, width) = affine._param_generator, size

    def draw(sampler: torch.distributions.Uniform | None, column: int, default: float) -> Tensor:
        if sampler is None:
            return torch.full_like(u[:, column], default)
        return _between(u[:, column], sampler.low.to(u), sampler.high.to(u))

    scale = draw(gen.scale_2_sampler, 4, 1.0)
    return {
        "batch_prob": u[:, 0] < affine.p,
        "angle": draw(gen.degree_sampler, 1, 0.0),
        "translations": torch.stack(
            [draw(gen.translate_x_sampler, 2, 0.0) * width, draw(gen.translate_y_sampler, 3, 0.0) * height], -1
        ),
        "center": torch.tensor([(width - 1) / 2, (height - 1) / 2], device=u.device).expand(len(u), 2),
        "scale": torch.stack([scale, scale if gen.scale_4_sampler is None else draw(gen.scale_4_sampler, 7, 1.0)], -1),
        "shear_x": draw(gen.shear_x_sampler, 5, 0.0),
        "shear_y": draw(gen.shear_y_sampler, 6, 0.0),
    }


def _affine_matrix(affine: K.RandomAffine, params: dict[str, Tensor], like: Tensor) -> Tensor:
    """``(N, 3, 3)`` pixel-to-pixel matrices of the drawn warps (the identity where a view is not warped)."""
    matrix = affine.compute_transformation(like, params, affine.flags)
    identity = torch.eye(3, device=matrix.device, dtype=matrix.dtype)
    return torch.where(params["batch_prob"].view(-1, 1, 1), matrix, identity)


def _apply_affine(affine: K.RandomAffine, views: Tensor, params: dict[str, Tensor]) -> Tensor:
    flags = affine.flags
    warped = warp_affine(
        views,
        _affine_matrix(affine, params, views)[:, :2],
        tuple(views.shape[-2:]),
        flags["resample"].name.lower(),
        align_corners=flags["align_corners"],
        padding_mode=flags["padding_mode"].name.lower(),
    )
    return torch.where(params["batch_prob"].view(-1, 1, 1, 1), warped, views)  # untouched views stay exact


def _hflip_params(flip: K.RandomHorizontalFlip, u: Tensor, shape: torch.Size) -> dict[str, Tensor]:
    return {"batch_prob": u[:, 0] < flip.p}


def _apply_hflip(flip: K.RandomHorizontalFlip, views: Tensor, params: dict[str, Tensor]) -> Tensor:
    return torch.where(params["batch_prob"].view(-1, 1, 1, 1), views.flip(-1), views)


def _color_jitter_params(jitter: K.ColorJitter, u: Tensor, shape: torch.Size) -> dict[str, Tensor]:
    """Kornia's factor ranges, drawn from ``u`` ``(N, 5)``: ``batch_prob`` and the four ``*_factor``, ``(N,)``."""
    gen = jitter._param_generator
    samplers = (gen.brightness_sampler, gen.contrast_sampler, gen.saturation_sampler, gen.hue_sampler)
    names = ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor")
    factors = {n: _between(u[:, i + 1], s.low.to(u), s.high.to(u)) for i, (n, s) in enumerate(zip(names, samplers))}
    return {"batch_prob": u[:, 0] < jitter.p, **factors}


def _apply_color_jitter(jitter: K.ColorJitter, views: Tensor, params: dict[str, Tensor]) -> Tensor:
    """Kornia's colour jitter (its own functions) in a fixed order (brightness, contrast, saturation, hue), where
    Kornia shuffles the order once a call."""
    out = enhance.adjust_brightness_accumulative(views.clamp(0, 1), params["brightness_factor"])
    out = enhance.adjust_contrast_with_mean_subtraction(out, params["contrast_factor"])
    out = enhance.adjust_saturation_with_gray_subtraction(out, params["saturation_factor"])
    out = enhance.adjust_hue(out, params["hue_factor"] * 2 * math.pi).clamp(0, 1)
    return torch.where(params["batch_prob"].view(-1, 1, 1, 1), out, views)


def _noise_params(noise: K.RandomGaussianNoise, u: Tensor, shape: torch.Size) -> dict[str, Tensor]:
    """Gaussian noise of views of ``shape`` ``(N, C, H, W)`` (Box-Muller from ``u`` ``(N, 1 + 2 * C * H * W)``):
    ``batch_prob`` ``(N,)`` and ``gaussian_noise`` ``(N, C, H, W)``, as Kornia names them."""
    n = math.prod(shape[1:])
    radius = (-2 * (1 - u[:, 1 : 1 + n]).log()).sqrt()  # 1 - u is in (0, 1]: the log stays finite
    normal = radius * torch.cos(2 * torch.pi * u[:, 1 + n :])
    gen = noise._param_generator
    return {"batch_prob": u[:, 0] < noise.p, "gaussian_noise": (normal * gen.std + gen.mean).view(shape)}


def _apply_noise(noise: K.RandomGaussianNoise, views: Tensor, params: dict[str, Tensor]) -> Tensor:
    applied = params["batch_prob"].to(views.dtype).view(-1, 1, 1, 1)
    return views + params["gaussian_noise"].to(views.dtype) * applied


class Drawn(NamedTuple):
    """How a transform is drawn from counter-based uniforms.

    ``count(shape)``: uniforms a view of ``shape`` ``(N, C, H, W)``; ``params(transform, u, shape)``: the drawn
    parameters of every view (Kornia's names where Kornia has the transform), from ``u`` ``(N, count)``;
    ``apply(transform, views, params)``: the views transformed.
    """

    count: Callable[[torch.Size], int]
    params: Callable[[nn.Module, Tensor, torch.Size], dict[str, Tensor]]
    apply: Callable[[nn.Module, Tensor, dict[str, Tensor]], Tensor]


def _own(module: type[RandomColorShift | RandomResizedCrop]) -> Drawn:
    return Drawn(lambda shape: module.draws, lambda t, u, shape: t.params(u), lambda t, v, params: t.apply(v, params))


_DRAWN: dict[type, Drawn] = {
    K.RandomAffine: Drawn(lambda shape: 8, lambda t, u, shape: affine_params(t, u, shape[-2:]), _apply_affine),
    K.RandomGaussianNoise: Drawn(lambda shape: 1 + 2 * math.prod(shape[1:]), _noise_params, _apply_noise),
    K.RandomHorizontalFlip: Drawn(lambda shape: 1, _hflip_params, _apply_hflip),
    K.ColorJitter: Drawn(lambda shape: 5, _color_jitter_params, _apply_color_jitter),
    RandomColorShift: _own(RandomColorShift),
    RandomResizedCrop: _own(RandomResizedCrop),
}


def _counter_based(transform: nn.Module) -> bool:
    per_view = not getattr(transform, "same_on_batch", False)
    return per_view and type(transform) in _DRAWN


class Augment(nn.Module):
    """Makes ``copies`` augmented views of each image, every view with its own random draws.

    Args:
        transforms: applied in order; Kornia augmentations must keep ``same_on_batch=False`` (their default).
            ``None`` gives :func:`reference_augmentations`, ``[]`` plain copies.
        copies: views of each image.
    """

    def __init__(self, transforms: list[nn.Module] | None = None, copies: int = 13) -> None:
        super().__init__()
        if copies < 1:
            raise UsageError(f"--model.copies must be at least 1, got {copies}")
        self.transforms = nn.Sequential(*(reference_augmentations() if transforms is None else transforms))
        self.copies = copies
        slow = [type(t).__name__ for t in self.transforms if not _counter_based(t)]
        if slow:
            log.warning(  # one line naming the setting, not a traceback-like frame of ours
                "%s cannot be drawn per prompt in one call (--model.augmentations): every step loops over the "
                "prompts for it (slower on a GPU, and the step cannot be compiled as one graph)",
                ", ".join(slow),
            )

    @property
    def vectorised(self) -> bool:
        """Whether every transform is drawn from counter-based uniforms (no loop over prompts)."""
        return all(_counter_based(t) for t in self.transforms)

    def view_keys(self, keys: Tensor) -> Tensor:
        """``(P,)`` step keys -> ``(P * copies,)`` keys, one a view, copies of prompt ``p`` at ``p * copies + c``."""
        return _stream(keys, self.copies, offset=1 << 50).flatten()

    def forward(self, images: Tensor, keys: Tensor) -> Tensor:
        """``(P, 3, H, W)`` images and ``(P,)`` int64 step keys -> ``(P * copies, 3, H, W)`` views.

        The copies of image ``p`` are rows ``p * copies + c``; they depend on ``keys[p]`` only.
        """
        views = images.repeat_interleave(self.copies, dim=0)
        for transform, params in zip(self.transforms, self.draw(keys, views.shape)):
            if params is None:
                views = self._per_prompt(transform, views, keys)
            else:
                views = _DRAWN[type(transform)].apply(transform, views, params)
        return views

    def draw(self, keys: Tensor, shape: torch.Size) -> list[dict[str, Tensor] | None]:
        """Every transform's parameters for the views of :meth:`forward`, from ``(P,)`` step keys and the views'
        ``shape`` ``(P * copies, C, H, W)``: one dictionary a transform (Kornia's names where Kornia has the
        transform), ``None`` for those Kornia draws itself."""
        vkeys = self.view_keys(keys)
        params = []
        for i, transform in enumerate(self.transforms):
            drawn = _DRAWN[type(transform)] if _counter_based(transform) else None
            u = None if drawn is None else uniforms(vkeys, drawn.count(shape), stream=i)
            params.append(None if drawn is None else drawn.params(transform, u, shape))
        return params

    def _per_prompt(self, transform: nn.Module, views: Tensor, keys: Tensor) -> Tensor:
        """The fallback: each prompt's copies through ``transform`` with Kornia's sampling, seeded by its key."""
        drawn = []
        for p, key in enumerate(keys.tolist()):  # a host read: the price of a transform Kornia draws itself
            torch.random.default_generator.manual_seed(key & (2**63 - 1))
            if views.device.type == "cuda":
                torch.cuda.manual_seed(key & (2**63 - 1))
            drawn.append(transform(views[p * self.copies : (p + 1) * self.copies]))
        return torch.cat(drawn)

    @property
    def fusable(self) -> bool:
        """Whether :meth:`warp_to` applies: the pipeline is a single ``RandomAffine`` drawn per copy."""
        return (
            len(self.transforms) == 1
            and type(self.transforms[0]) is K.RandomAffine
            and not self.transforms[0].same_on_batch
        )

    def affine_params(self, keys: Tensor, size: tuple[int, int]) -> dict[str, Tensor]:
        """Kornia's parameters of the first transform (a ``RandomAffine``) for every view, as :meth:`forward`
        draws them: ``(P,)`` step keys and the images' ``(H, W)`` -> a dictionary of ``(P * copies, ...)``."""
        return affine_params(self.transforms[0], uniforms(self.view_keys(keys), 8, stream=0), size)

    def warp_to(self, images: Tensor, size: tuple[int, int], keys: Tensor) -> Tensor:
        """The copies, warped and resized to ``size`` in one sampling (only when :attr:`fusable`).

        Draws the same affine parameters as :meth:`forward`, turns them into sampling grids at ``size`` and
        samples each image once with the affine's own interpolation (bilinear by default), instead of warping
        at the image's size and resizing (bicubic) afterwards. At the image's size this is the pipeline's warp;
        above it, the upsampling is bilinear instead of bicubic.

        Args:
            images: ``(P, 3, H, W)``.
            size: ``(h, w)`` of the views, the model's input size.
            keys: ``(P,)`` int64 step keys, as in :meth:`forward`.

        Returns:
            ``(P * copies, 3, h, w)``, the copies of image ``p`` at rows ``p * copies + c``.
        """
        affine: K.RandomAffine = self.transforms[0]
        height, width = images.shape[-2:]
        views = images.repeat_interleave(self.copies, dim=0)
        matrix = _affine_matrix(affine, self.affine_params(keys, (height, width)), views)
        align = affine.flags["align_corners"]
        warp = normalize_homography(matrix, (height, width), (height, width), align_corners=align)
        inverse = torch.linalg.inv_ex(warp).inverse  # no error check: no device sync (never singular here)
        grid = F.affine_grid(inverse[:, :2], [len(views), images.shape[1], *size], align_corners=align)
        mode, padding = affine.flags["resample"].name.lower(), affine.flags["padding_mode"].name.lower()
        return F.grid_sample(views, grid, mode=mode, padding_mode=padding, align_corners=align)
