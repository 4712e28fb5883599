"""A seeded world of captioned images: one coloured shape on a plain, gradient or noisy background.

Everything is rendered with batched torch ops, so a batch of a few hundred 64 px images takes milliseconds.
The same ``(seed, n)`` always gives the same images and captions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.90, 0.10, 0.10),
    "green": (0.10, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.95),
    "yellow": (0.95, 0.90, 0.10),
    "purple": (0.60, 0.15, 0.80),
    "orange": (1.00, 0.55, 0.05),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross")
BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "noise")

TRAIN_TEMPLATES: tuple[str, ...] = (
    "a {colour} {shape}",
    "a photo of a {colour} {shape}",
    "a picture of a {colour} {shape}",
    "a {shape} that is {colour}",
    "{colour} {shape}",
    "a drawing of a {colour} {shape}",
)
HELD_OUT_TEMPLATE = "an image of a {colour} {shape}"

_ANGLES = 720  # resolution of the shape outline tables


def _outline(vertices: list[tuple[float, float]]) -> Tensor:
    """Distance from the centre to the outline of a star-shaped polygon, at ``_ANGLES`` even angles.

    Args:
        vertices: polygon corners in counter-clockwise order around the origin.

    Returns:
        ``(_ANGLES,)`` radii.
    """
    v = torch.tensor(vertices, dtype=torch.float64)
    e = v.roll(-1, 0) - v
    start = torch.atan2(v[:, 1], v[:, 0]) % (2 * math.pi)
    theta = torch.arange(_ANGLES, dtype=torch.float64) * (2 * math.pi / _ANGLES)
    # The edge whose angular span holds theta is the last vertex at or before theta (cyclically).
    after = (theta[:, None] - start[None, :]) % (2 * math.pi)
    i = after.argmin(dim=1)
    d = torch.stack([theta.cos(), theta.sin()], dim=1)
    vi, ei = v[i], e[i]
    radius = (vi[:, 0] * ei[:, 1] - vi[:, 1] * ei[:, 0]) / (d[:, 0] * ei[:, 1] - d[:, 1] * ei[:, 0])
    return radius.float()


def _regular(n: int, radii: tuple[float, ...], phase: float) -> list[tuple[float, float]]:
    k = n * len(radii)
    return [
        (
            radii[j % len(radii)] * math.cos(phase + 2 * math.pi * j / k),
            radii[j % len(radii)] * math.sin(phase + 2 * math.pi * j / k),
        )
        for j in range(k)
    ]


def _cross(w: float = 0.34) -> list[tuple[float, float]]:
    return [(1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w), (-w, -1), (w, -1), (w, -w)]


OUTLINES: dict[str, Tensor] = {
    "circle": torch.full((_ANGLES,), 0.85),
    "square": _outline(_regular(4, (1.0,), math.pi / 4)) * 0.9,
    "triangle": _outline(_regular(3, (1.0,), math.pi / 2)),
    "star": _outline(_regular(5, (1.0, 0.42), math.pi / 2)),
    "cross": _outline(_cross()),
}


@dataclass
class Scenes:
    """The random draws behind a batch of ``N`` images (all tensors have leading dimension ``N``)."""

    colour: Tensor  # (N,) index into ShapeWorld.colours
    shape: Tensor  # (N,) index into ShapeWorld.shapes
    centre: Tensor  # (N, 2) in [-1, 1] image coordinates
    radius: Tensor  # (N,) outer radius as a fraction of the image half-width
    rotation: Tensor  # (N,) radians
    rgb: Tensor  # (N, 3) the shape's colour after jitter, in [0, 1]
    background: Tensor  # (N,) index into BACKGROUNDS
    bg_rgb: Tensor  # (N, 2, 3) two muted colours for the background, in [0, 1]
    bg_angle: Tensor  # (N,) gradient direction
    template: Tensor  # (N,) index into the caption templates


@dataclass
class ShapeWorld:
    """Captioned images of one coloured shape, with optional planted colour-shape correlations.

    Args:
        image_size: side of the square images in pixels.
        colours: colour names, a subset of ``COLOURS``.
        shapes: shape names, a subset of ``SHAPES``.
        correlations: planted biases as ``{shape: {colour: probability}}``; for example
            ``{"star": {"yellow": 0.9}}`` makes 90% of stars yellow, the rest spread evenly over
            the other colours. Shapes not named get uniform colours.
        templates: caption templates with ``{colour}`` and ``{shape}`` fields.
        held_out_template: the template kept out of training, for zero-shot evaluation.
    """

    KNOWN_SHAPES = SHAPES  # the shape names a world of this class can render (not a field)

    image_size: int = 64
    colours: tuple[str, ...] = tuple(COLOURS)
    shapes: tuple[str, ...] = SHAPES
    correlations: dict[str, dict[str, float]] = field(default_factory=dict)
    templates: tuple[str, ...] = TRAIN_TEMPLATES
    held_out_template: str = HELD_OUT_TEMPLATE

    def __post_init__(self) -> None:
        self.colours, self.shapes, self.templates = tuple(self.colours), tuple(self.shapes), tuple(self.templates)
        unknown = (set(self.colours) - set(COLOURS)) | (set(self.shapes) - set(self.KNOWN_SHAPES))
        if unknown:
            raise ValueError(f"unknown colours or shapes: {sorted(unknown)}")
        probs = torch.full((len(self.shapes), len(self.colours)), 1.0 / len(self.colours))
        for shape, planted in self.correlations.items():
            row = torch.zeros(len(self.colours))
            for colour, p in planted.items():
                row[self.colours.index(colour)] = p
            rest = 1.0 - row.sum()
            if rest < -1e-6:
                raise ValueError(f"planted probabilities for {shape!r} add up to more than 1")
            free = row == 0
            row[free] = rest.clamp(min=0) / max(int(free.sum()), 1)
            probs[self.shapes.index(shape)] = row
        self._colour_given_shape = probs

    def captions_of(self, template: str | None = None) -> list[str]:
        """Every colour-shape caption of the world, colour-major: index ``c * len(shapes) + s``."""
        template = template or self.templates[0]
        return [template.format(colour=c, shape=s) for c in self.colours for s in self.shapes]

    def sample(self, n: int, seed: int) -> Scenes:
        """Draw ``n`` scenes from a generator seeded with ``seed``."""
        g = torch.Generator().manual_seed(seed)

        def u(*shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
            return lo + (hi - lo) * torch.rand(*shape, generator=g)

        shape = torch.randint(len(self.shapes), (n,), generator=g)
        colour = torch.multinomial(self._colour_given_shape[shape], 1, generator=g).squeeze(1)
        base = torch.tensor([COLOURS[c] for c in self.colours])[colour]
        rgb = (base * u(n, 1, lo=0.85, hi=1.1) + u(n, 3, lo=-0.06, hi=0.06)).clamp(0, 1)
        grey = u(n, 2, 1, lo=0.15, hi=0.85)
        tint = u(n, 2, 3, lo=-0.12, hi=0.12)
        radius = u(n, lo=0.35, hi=0.7)
        return Scenes(
            colour=colour,
            shape=shape,
            centre=u(n, 2, lo=-1, hi=1) * (1 - radius[:, None]) * 0.9,
            radius=radius,
            rotation=u(n, hi=2 * math.pi),
            rgb=rgb,
            background=torch.randint(len(BACKGROUNDS), (n,), generator=g),
            bg_rgb=(grey + tint).clamp(0, 1),
            bg_angle=u(n, hi=2 * math.pi),
            template=torch.randint(len(self.templates), (n,), generator=g),
        )

    def render(self, scenes: Scenes, seed: int = 0) -> Tensor:
        """Render scenes to images.

        Args:
            scenes: draws from :meth:`sample`.
            seed: seed of the background noise.

        Returns:
            ``(N, 3, image_size, image_size)`` images in [0, 1].
        """
        n, size = scenes.colour.shape[0], self.image_size
        coords = (torch.arange(size) + 0.5) / size * 2 - 1
        y, x = torch.meshgrid(coords, coords, indexing="ij")  # (H, W); y grows downwards
        dx = x[None] - scenes.centre[:, 0, None, None]
        dy = -(y[None] - scenes.centre[:, 1, None, None])
        dist = (dx.square() + dy.square()).sqrt()
        angle = (torch.atan2(dy, dx) - scenes.rotation[:, None, None]) % (2 * math.pi)
        table = torch.stack([OUTLINES[s] for s in self.shapes])  # (S, A)
        index = (angle * (_ANGLES / (2 * math.pi))).long().clamp_(max=_ANGLES - 1)
        edge = table[scenes.shape[:, None, None], index] * scenes.radius[:, None, None]
        alpha = ((edge - dist) * (size / 2) + 0.5).clamp(0, 1)[:, None]  # one pixel of anti-aliasing

        lo, hi = scenes.bg_rgb[:, 0, :, None, None], scenes.bg_rgb[:, 1, :, None, None]
        along = x[None] * scenes.bg_angle.cos()[:, None, None] + y[None] * scenes.bg_angle.sin()[:, None, None]
        ramp = ((along + 1.5) / 3).clamp(0, 1)[:, None]
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn(n, 3, size // 4, size // 4, generator=g)
        noise = torch.nn.functional.interpolate(noise, size=size, mode="bilinear", align_corners=False)
        kind = scenes.background[:, None, None, None]
        background = torch.where(kind == 0, lo, torch.where(kind == 1, lo + (hi - lo) * ramp, lo + 0.12 * noise))
        image = background.clamp(0, 1) * (1 - alpha) + scenes.rgb[:, :, None, None] * alpha
        return image.clamp(0, 1)

    def captions(self, scenes: Scenes) -> list[str]:
        """One caption a scene, from the template drawn for it."""
        return [
            self.templates[t].format(colour=self.colours[c], shape=self.shapes[s])
            for c, s, t in zip(scenes.colour.tolist(), scenes.shape.tolist(), scenes.template.tolist())
        ]

    def batch(self, n: int, seed: int) -> tuple[Tensor, list[str], Scenes]:
        """``n`` images ``(n, 3, H, W)`` in [0, 1], their captions and their scenes, all from ``seed``."""
        scenes = self.sample(n, seed)
        return self.render(scenes, seed), self.captions(scenes), scenes
