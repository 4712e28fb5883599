"""World B: a shaded, outlined coloured shape among grey specks on a patterned background.

A held-out second world for checking that settings chosen on world A (``world.py``) carry over: the same
6 colour and 5 shape names (so the same 30 captions), but its own colour prototypes, its own renderer
(implicit shape functions with stretch, shading and outlines instead of polar outline tables), 0-3 grey
specks (discs of 1-3 px radius, too small to read as a shape), four patterned backgrounds (stripes,
checks, radial gradient, grain) and its own caption templates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from clip_inversion.toyworld.world import ShapeWorld

COLOURS_B: dict[str, tuple[float, float, float]] = {
    "red": (0.82, 0.12, 0.18),
    "green": (0.20, 0.62, 0.15),
    "blue": (0.10, 0.35, 0.85),
    "yellow": (0.92, 0.82, 0.20),
    "purple": (0.52, 0.20, 0.70),
    "orange": (0.95, 0.48, 0.12),
}
BACKGROUNDS_B: tuple[str, ...] = ("stripes", "checks", "radial", "grain")

TEMPLATES_B: tuple[str, ...] = (
    "a {colour} {shape}",
    "there is a {colour} {shape} here",
    "the {shape} is {colour}",
    "one {colour} {shape} and some grey specks",
    "{colour} {shape} on a patterned background",
    "a {colour} coloured {shape}",
)
HELD_OUT_TEMPLATE_B = "a rendering of a {colour} {shape}"


def shape_fields(x: Tensor, y: Tensor) -> Tensor:
    """Implicit functions of the five shapes: negative inside, 0 on the edge, in units of about the radius.

    Args:
        x, y: ``(N, H, W)`` coordinates in each object's frame (unit = its radius; y up).

    Returns:
        ``(N, 5, H, W)``, shapes in ``SHAPES`` order: circle, square, triangle, star, cross.
    """
    circle = (x.square() + y.square()).sqrt() - 1
    square = torch.maximum(x.abs(), y.abs()) - 0.8
    # Equilateral triangle pointing up: three half-planes at inradius 0.5 (circumradius 1).
    tri = torch.stack([x * math.cos(a) + y * math.sin(a) for a in (-math.pi / 2, math.pi / 6, 5 * math.pi / 6)])
    triangle = (tri.amax(dim=0) - 0.5) / 0.5
    # A five-pointed star: five thin diamonds from the centre outwards, joined by a small disc.
    arms = []
    for k in range(5):
        a = math.pi / 2 + 2 * math.pi * k / 5
        u, v = x * math.cos(a) + y * math.sin(a), -x * math.sin(a) + y * math.cos(a)
        arms.append((u - 0.5).abs() / 0.5 + v.abs() / 0.3 - 1)
    star = torch.stack([*arms, (x.square() + y.square()).sqrt() / 0.3 - 1]).amin(dim=0)
    cross = torch.minimum(torch.maximum(x.abs() - 0.95, y.abs() - 0.3), torch.maximum(x.abs() - 0.3, y.abs() - 0.95))
    return torch.stack([circle, square, triangle, star, cross], dim=1)


@dataclass
class ClutterScenes:
    """The random draws behind ``N`` images of world B (leading dimension ``N``; ``K`` speck slots)."""

    colour: Tensor  # (N,) index into the world's colours
    shape: Tensor  # (N,) index into the world's shapes
    centre: Tensor  # (N, 2) in [-1, 1]
    radius: Tensor  # (N,) fraction of the half-width
    stretch: Tensor  # (N,) x / y aspect of the object
    rotation: Tensor  # (N,) radians
    rgb: Tensor  # (N, 3) in [0, 1]
    light: Tensor  # (N,) direction the shading comes from, radians
    outlined: Tensor  # (N,) bool: a dark rim around the shape
    clutter: Tensor  # (N, K) bool: a grey speck (a small disc) present
    clutter_centre: Tensor  # (N, K, 2)
    clutter_radius: Tensor  # (N, K)
    clutter_grey: Tensor  # (N, K) grey level in [0, 1]
    background: Tensor  # (N,) index into BACKGROUNDS_B
    bg_rgb: Tensor  # (N, 2, 3) two desaturated colours, in [0, 1]
    bg_angle: Tensor  # (N,) pattern direction, radians
    bg_freq: Tensor  # (N,) pattern periods across the image
    template: Tensor  # (N,) index into the caption templates


@dataclass
class ClutterWorld(ShapeWorld):
    """World B: see the module docstring. Same arguments as :class:`ShapeWorld`, with world B's templates."""

    templates: tuple[str, ...] = TEMPLATES_B
    held_out_template: str = HELD_OUT_TEMPLATE_B
    clutter_slots: int = 3

    def sample(self, n: int, seed: int) -> ClutterScenes:
        """Draw ``n`` scenes from a generator seeded with ``seed``."""
        g = torch.Generator().manual_seed(seed)
        k = self.clutter_slots

        def u(*shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
            return lo + (hi - lo) * torch.rand(*shape, generator=g)

        shape = torch.randint(len(self.shapes), (n,), generator=g)
        colour = torch.multinomial(self._colour_given_shape[shape], 1, generator=g).squeeze(1)
        base = torch.tensor([COLOURS_B[c] for c in self.colours])[colour]
        rgb = (base * u(n, 1, lo=0.8, hi=1.1) + u(n, 3, lo=-0.05, hi=0.05)).clamp(0, 1)
        radius = u(n, lo=0.35, hi=0.7)
        grey = u(n, 1, 1, lo=0.25, hi=0.75) + u(n, 2, 1, lo=-0.12, hi=0.12)  # low-contrast patterns
        return ClutterScenes(
            colour=colour,
            shape=shape,
            centre=u(n, 2, lo=-1, hi=1) * (1 - radius[:, None]),
            radius=radius,
            stretch=u(n, lo=0.8, hi=1.25),
            rotation=u(n, hi=2 * math.pi),
            rgb=rgb,
            light=u(n, hi=2 * math.pi),
            outlined=u(n) < 0.5,
            clutter=u(n, k) < 0.5,
            clutter_centre=u(n, k, 2, lo=-0.85, hi=0.85),
            clutter_radius=u(n, k, lo=0.04, hi=0.09),
            clutter_grey=u(n, k, lo=0.05, hi=0.95),
            background=torch.randint(len(BACKGROUNDS_B), (n,), generator=g),
            bg_rgb=(grey + u(n, 2, 3, lo=-0.06, hi=0.06)).clamp(0, 1),
            bg_angle=u(n, hi=2 * math.pi),
            bg_freq=u(n, lo=2, hi=6),
            template=torch.randint(len(self.templates), (n,), generator=g),
        )

    def _object(self, shape: Tensor, centre: Tensor, radius: Tensor, stretch: Tensor, rotation: Tensor) -> tuple:
        """Coverage ``(N, 1, H, W)`` in [0, 1] and the field ``(N, H, W)`` of one object per image."""
        size = self.image_size
        coords = (torch.arange(size) + 0.5) / size * 2 - 1
        y, x = torch.meshgrid(-coords, coords, indexing="ij")  # y up
        dx, dy = x[None] - centre[:, 0, None, None], y[None] - centre[:, 1, None, None]
        c, s = rotation.cos()[:, None, None], rotation.sin()[:, None, None]
        r = radius[:, None, None]
        lx, ly = (c * dx + s * dy) / (r * stretch[:, None, None]), (-s * dx + c * dy) / r
        all_fields = shape_fields(lx, ly)
        field = all_fields.gather(1, shape[:, None, None, None].expand(-1, 1, size, size))[:, 0]
        alpha = (0.5 - field * r * (size / 2)).clamp(0, 1)[:, None]  # about one pixel of anti-aliasing
        return alpha, field

    def render(self, scenes: ClutterScenes, seed: int = 0) -> Tensor:
        """Render scenes to ``(N, 3, image_size, image_size)`` images in [0, 1]; ``seed`` seeds the grain."""
        n, size = scenes.colour.shape[0], self.image_size
        coords = (torch.arange(size) + 0.5) / size * 2 - 1
        y, x = torch.meshgrid(coords, coords, indexing="ij")
        along = x[None] * scenes.bg_angle.cos()[:, None, None] + y[None] * scenes.bg_angle.sin()[:, None, None]
        across = -x[None] * scenes.bg_angle.sin()[:, None, None] + y[None] * scenes.bg_angle.cos()[:, None, None]
        freq = scenes.bg_freq[:, None, None]
        stripes = 0.5 + 0.5 * torch.sin(math.pi * freq * along)
        checks = ((torch.floor(freq * along) + torch.floor(freq * across)) % 2).float()
        radial = ((x[None].square() + y[None].square()).sqrt() / math.sqrt(2)).expand(n, -1, -1)
        g = torch.Generator().manual_seed(seed)
        grain = (0.5 + 0.25 * torch.randn(n, size // 2, size // 2, generator=g)).clamp(0, 1)
        grain = torch.nn.functional.interpolate(grain[:, None], size=size, mode="nearest")[:, 0]
        mix = torch.stack([stripes, checks, radial, grain], dim=1)
        mix = mix.gather(1, scenes.background[:, None, None, None].expand(-1, 1, size, size))  # (N, 1, H, W)
        lo, hi = scenes.bg_rgb[:, 0, :, None, None], scenes.bg_rgb[:, 1, :, None, None]
        image = lo + (hi - lo) * mix

        disc, ones, zeros = torch.zeros(n, dtype=torch.long), torch.ones(n), torch.zeros(n)
        for k in range(scenes.clutter.shape[1]):
            alpha, _ = self._object(disc, scenes.clutter_centre[:, k], scenes.clutter_radius[:, k], ones, zeros)
            alpha = alpha * scenes.clutter[:, k, None, None, None]
            image = image * (1 - alpha) + scenes.clutter_grey[:, k, None, None, None] * alpha

        alpha, field = self._object(scenes.shape, scenes.centre, scenes.radius, scenes.stretch, scenes.rotation)
        # Shading: brighter towards the light, across the object's extent; a dark rim where outlined.
        dx = x[None] - scenes.centre[:, 0, None, None]
        dy = -y[None] - scenes.centre[:, 1, None, None]
        lit = (dx * scenes.light.cos()[:, None, None] + dy * scenes.light.sin()[:, None, None]) / scenes.radius[
            :, None, None
        ]
        shade = (1 + 0.2 * lit.clamp(-1, 1))[:, None]
        rim = (field > -3 / (size * scenes.radius[:, None, None])) & scenes.outlined[:, None, None]  # ~1.5 px
        rim = rim[:, None]
        colour = scenes.rgb[:, :, None, None] * shade * torch.where(rim, 0.45, 1.0)
        image = image * (1 - alpha) + colour.clamp(0, 1) * alpha
        return image.clamp(0, 1)
