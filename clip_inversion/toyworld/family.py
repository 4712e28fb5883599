"""A family of shape worlds drawn from one integer: ``draw_world(seed)`` gives world ``seed`` of the family.

Every world keeps the six colour names of worlds A and B and names five shapes, so its 30 captions read like
theirs ("a red hexagon"), and changes everything else with the seed: the renderer's style (flat, shaded,
outlined or textured), two background kinds out of six, the exact RGB of each named colour, five shapes out of
eleven (never two too alike), the number of grey specks of clutter and the caption templates. The image size is
drawn from ``IMAGE_SIZES``, which holds 32 px alone: at 64 px a world's ViT did not reach 90% in the time a world
may take to train (docs/toy-models.md). The models trained on a world (its subject and its judge) are drawn in
:mod:`clip_inversion.toyworld.towers`.

The same seed always gives the same world, and a world's ``(seed, n)`` batch is always the same images.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

import torch
from torch import Tensor

from clip_inversion.toyworld.clutter import ClutterScenes, shape_fields
from clip_inversion.toyworld.world import COLOURS, SHAPES, ShapeWorld

FAMILY_SHAPES: tuple[str, ...] = (*SHAPES, "hexagon", "diamond", "heart", "crescent", "ring", "arrow")
STYLES: tuple[str, ...] = ("flat", "shaded", "outlined", "textured")
FAMILY_BACKGROUNDS: tuple[str, ...] = ("plain", "gradient", "stripes", "checks", "radial", "grain")
IMAGE_SIZES: tuple[int, ...] = (32,)  # 64 px ViTs (patch 16) did not reach 90% within the time a world may take
ALIKE: tuple[frozenset[str], ...] = (
    frozenset({"circle", "hexagon"}),
    frozenset({"square", "hexagon"}),
)  # never in one world

# Caption templates: the first is what a judge scores inversions among, kept the same for every world; each world
# trains on it and five more of the pool and holds one of HELD_OUT_POOL out. None names a colour or a shape itself.
JUDGE_TEMPLATE = "a {colour} {shape}"
TEMPLATE_POOL: tuple[str, ...] = (
    "a photo of a {colour} {shape}",
    "a picture of a {colour} {shape}",
    "a {shape} that is {colour}",
    "{colour} {shape}",
    "a drawing of a {colour} {shape}",
    "there is a {colour} {shape} here",
    "the {shape} is {colour}",
    "a {colour} coloured {shape}",
    "one {colour} {shape}",
    "a small {colour} {shape}",
)
HELD_OUT_POOL: tuple[str, ...] = (
    "an image of a {colour} {shape}",
    "a rendering of a {colour} {shape}",
    "a sketch of a {colour} {shape}",
)


def _half_planes(x: Tensor, y: Tensor, angles: list[float], inradius: float) -> Tensor:
    """Field of the convex polygon whose edges face ``angles`` (radians) at distance ``inradius``."""
    return torch.stack([x * math.cos(a) + y * math.sin(a) for a in angles]).amax(dim=0) - inradius


def _disc(x: Tensor, y: Tensor, cx: float, cy: float, r: float) -> Tensor:
    return ((x - cx).square() + (y - cy).square()).sqrt() - r


def new_shape_fields(x: Tensor, y: Tensor) -> Tensor:
    """Implicit functions of the six shapes the family adds to worlds A and B's five.

    Args:
        x, y: ``(N, H, W)`` coordinates in each object's frame (unit: about its radius; y up).

    Returns:
        ``(N, 6, H, W)``: negative inside, about the distance to the edge in radii; hexagon, diamond, heart,
        crescent, ring, arrow (``FAMILY_SHAPES[5:]`` order).
    """
    hexagon = _half_planes(x, y, [math.pi / 3 * k for k in range(6)], 0.87)
    diamond = (x.abs() / 0.55 + y.abs() - 1) / math.hypot(1 / 0.55, 1)  # a tall rhombus, not a square turned
    lobes = torch.minimum(_disc(x, y, -0.4, 0.25, 0.45), _disc(x, y, 0.4, 0.25, 0.45))
    heart = torch.minimum(lobes, (x.abs() + (y + 0.12).abs() - 0.82) / math.sqrt(2))
    crescent = torch.maximum(_disc(x, y, 0, 0, 1), -_disc(x, y, 0.45, 0.15, 0.78))
    ring = ((x.square() + y.square()).sqrt() - 0.72).abs() - 0.26
    shaft = torch.maximum((y.abs() - 0.3), torch.maximum(-x - 0.95, x - 0.1))
    slant = math.hypot(0.75, 0.95)  # the head: a triangle from (0.05, +-0.75) to its tip at (1, 0)
    head = torch.maximum(0.05 - x, torch.maximum(0.75 * (x - 1) + 0.95 * y, 0.75 * (x - 1) - 0.95 * y) / slant)
    arrow = torch.minimum(shaft, head)
    return torch.stack([hexagon, diamond, heart, crescent, ring, arrow], dim=1)


def family_fields(x: Tensor, y: Tensor, shapes: tuple[str, ...] = FAMILY_SHAPES) -> Tensor:
    """``(N, len(shapes), H, W)`` fields of ``shapes`` (names of ``FAMILY_SHAPES``), from ``(N, H, W)`` object-frame
    coordinates; only the shapes of the groups named are computed (worlds A and B's five, the family's six)."""
    groups = [(SHAPES, shape_fields), (FAMILY_SHAPES[len(SHAPES) :], new_shape_fields)]
    fields = {}
    for names, compute in groups:
        if set(names) & set(shapes):
            fields |= dict(zip(names, compute(x, y).unbind(dim=1)))
    return torch.stack([fields[s] for s in shapes], dim=1)


@dataclass
class FamilyWorld(ShapeWorld):
    """One world of the family. Build it with :func:`draw_world`; every field is then set from the seed.

    Args:
        world_seed: the seed it was drawn from (kept for its description).
        palette: RGB in [0, 1] of each colour name, ``{name: (r, g, b)}``.
        style: one of ``STYLES``.
        backgrounds: the background kinds its scenes choose among, names of ``FAMILY_BACKGROUNDS``.
        clutter_slots: at most this many grey specks an image (each present with probability one half).
        image_size, colours, shapes, templates, held_out_template: as for :class:`ShapeWorld`; ``shapes`` are
            names of ``FAMILY_SHAPES``.
    """

    KNOWN_SHAPES = FAMILY_SHAPES

    world_seed: int = 0
    palette: dict[str, tuple[float, float, float]] = field(default_factory=lambda: dict(COLOURS))
    style: str = "flat"
    backgrounds: tuple[str, ...] = ("plain",)
    clutter_slots: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.backgrounds = tuple(self.backgrounds)
        if self.style not in STYLES or not set(self.backgrounds) <= set(FAMILY_BACKGROUNDS):
            raise ValueError(f"unknown style {self.style!r} or backgrounds {self.backgrounds}")

    def describe(self) -> dict:
        """The world as plain JSON values."""
        return {
            "world_seed": self.world_seed,
            "image_size": self.image_size,
            "style": self.style,
            "backgrounds": list(self.backgrounds),
            "clutter_slots": self.clutter_slots,
            "shapes": list(self.shapes),
            "palette": {c: [round(v, 3) for v in rgb] for c, rgb in self.palette.items()},
            "templates": list(self.templates),
            "held_out_template": self.held_out_template,
        }

    def sample(self, n: int, seed: int) -> ClutterScenes:
        """Draw ``n`` scenes from a generator seeded with ``seed``."""
        g = torch.Generator().manual_seed(seed)
        k = max(self.clutter_slots, 1)

        def u(*shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
            return lo + (hi - lo) * torch.rand(*shape, generator=g)

        shape = torch.randint(len(self.shapes), (n,), generator=g)
        colour = torch.multinomial(self._colour_given_shape[shape], 1, generator=g).squeeze(1)
        base = torch.tensor([self.palette[c] for c in self.colours])[colour]
        rgb = (base * u(n, 1, lo=0.85, hi=1.1) + u(n, 3, lo=-0.05, hi=0.05)).clamp(0, 1)
        radius = u(n, lo=0.45, hi=0.75)
        grey = u(n, 1, 1, lo=0.25, hi=0.75) + u(n, 2, 1, lo=-0.12, hi=0.12)
        return ClutterScenes(
            colour=colour,
            shape=shape,
            centre=u(n, 2, lo=-1, hi=1) * (1 - radius[:, None]) * 0.9,
            radius=radius,
            stretch=u(n, lo=0.85, hi=1.15),
            rotation=u(n, hi=2 * math.pi),
            rgb=rgb,
            light=u(n, hi=2 * math.pi),  # the light's direction (shaded) or the texture stripes' (textured)
            outlined=torch.full((n,), self.style == "outlined"),
            clutter=(u(n, k) < 0.5) & (self.clutter_slots > 0),
            clutter_centre=u(n, k, 2, lo=-0.85, hi=0.85),
            clutter_radius=u(n, k, lo=0.04, hi=0.08),
            clutter_grey=u(n, k, lo=0.05, hi=0.95),
            background=torch.randint(len(self.backgrounds), (n,), generator=g),
            bg_rgb=(grey + u(n, 2, 3, lo=-0.06, hi=0.06)).clamp(0, 1),
            bg_angle=u(n, hi=2 * math.pi),
            bg_freq=u(n, lo=2, hi=5),
            template=torch.randint(len(self.templates), (n,), generator=g),
        )

    def _grid(self) -> tuple[Tensor, Tensor]:
        coords = (torch.arange(self.image_size) + 0.5) / self.image_size * 2 - 1
        y, x = torch.meshgrid(-coords, coords, indexing="ij")  # (H, W); y up
        return x, y

    def _background(self, scenes: ClutterScenes, seed: int) -> Tensor:
        """``(N, 3, H, W)`` backgrounds in [0, 1]: two muted colours mixed by each scene's pattern."""
        n, size = scenes.colour.shape[0], self.image_size
        x, y = self._grid()
        cos, sin = scenes.bg_angle.cos()[:, None, None], scenes.bg_angle.sin()[:, None, None]
        along, across = x[None] * cos + y[None] * sin, -x[None] * sin + y[None] * cos
        freq = scenes.bg_freq[:, None, None]
        g = torch.Generator().manual_seed(seed)
        grain = torch.rand(n, 1, max(size // 4, 1), max(size // 4, 1), generator=g)
        patterns = {
            "plain": torch.zeros(n, size, size),
            "gradient": ((along + 1.5) / 3).clamp(0, 1),
            "stripes": 0.5 + 0.5 * torch.sin(math.pi * freq * along),
            "checks": ((torch.floor(freq * along) + torch.floor(freq * across)) % 2).float(),
            "radial": ((x.square() + y.square()).sqrt() / math.sqrt(2))[None].expand(n, -1, -1),
            "grain": torch.nn.functional.interpolate(grain, size=size, mode="bilinear", align_corners=False)[:, 0],
        }
        mix = torch.stack([patterns[b] for b in self.backgrounds], dim=1)  # (N, B, H, W)
        mix = mix.gather(1, scenes.background[:, None, None, None].expand(-1, 1, size, size))
        lo, hi = scenes.bg_rgb[:, 0, :, None, None], scenes.bg_rgb[:, 1, :, None, None]
        return lo + (hi - lo) * mix

    def _coverage(self, value: Tensor, radius: Tensor) -> Tensor:
        """``(N, 1, H, W)`` coverage in [0, 1] of a field ``(N, H, W)`` in radii: about a pixel of anti-aliasing."""
        return (0.5 - value * radius[:, None, None] * (self.image_size / 2)).clamp(0, 1)[:, None]

    def _object(self, scenes: ClutterScenes) -> tuple[Tensor, Tensor, tuple[Tensor, Tensor]]:
        """Coverage ``(N, 1, H, W)``, field ``(N, H, W)`` and frame coordinates ``(N, H, W)`` x 2 of each shape."""
        size = self.image_size
        x, y = self._grid()
        dx, dy = x[None] - scenes.centre[:, 0, None, None], y[None] - scenes.centre[:, 1, None, None]
        c, s = scenes.rotation.cos()[:, None, None], scenes.rotation.sin()[:, None, None]
        r = scenes.radius[:, None, None]
        lx, ly = (c * dx + s * dy) / (r * scenes.stretch[:, None, None]), (-s * dx + c * dy) / r
        fields = family_fields(lx, ly, self.shapes)  # (N, 5, H, W)
        value = fields.gather(1, scenes.shape[:, None, None, None].expand(-1, 1, size, size))[:, 0]
        return self._coverage(value, scenes.radius), value, (lx, ly)

    def render(self, scenes: ClutterScenes, seed: int = 0) -> Tensor:
        """Render scenes to ``(N, 3, image_size, image_size)`` images in [0, 1]; ``seed`` seeds the grain."""
        image = self._background(scenes, seed)
        x, y = self._grid()
        for k in range(scenes.clutter.shape[1]):  # grey specks: small discs
            centre, radius = scenes.clutter_centre[:, k, :, None, None], scenes.clutter_radius[:, k]
            dist = ((x[None] - centre[:, 0]).square() + (y[None] - centre[:, 1]).square()).sqrt()
            alpha = self._coverage(dist / radius[:, None, None] - 1, radius) * scenes.clutter[:, k, None, None, None]
            image = image * (1 - alpha) + scenes.clutter_grey[:, k, None, None, None] * alpha

        alpha, value, (lx, ly) = self._object(scenes)
        colour = scenes.rgb[:, :, None, None].expand(-1, -1, self.image_size, self.image_size)
        towards = (lx * scenes.light.cos()[:, None, None] + ly * scenes.light.sin()[:, None, None]).clamp(-1, 1)
        if self.style == "shaded":  # brighter towards the light, across the object
            colour = colour * (1 + 0.25 * towards)[:, None]
        elif self.style == "outlined":  # a dark rim of about 1 px
            rim = value > -2 / (self.image_size * scenes.radius[:, None, None])
            colour = colour * torch.where(rim, 0.4, 1.0)[:, None]
        elif self.style == "textured":  # stripes of lighter and darker paint
            colour = colour * (0.85 + 0.15 * torch.sin(3 * math.pi * towards))[:, None]
        image = image * (1 - alpha) + colour.clamp(0, 1) * alpha
        return image.clamp(0, 1)


def draw_world(seed: int) -> FamilyWorld:
    """World ``seed`` of the family: the same seed always gives the same world.

    Args:
        seed: any integer; the protocol tunes on seeds 0-4 and reports on 100-109.

    Returns:
        A :class:`FamilyWorld` whose ``world_seed`` is ``seed``.
    """
    rng = random.Random(f"clip-inversion family world {seed}")
    palette = {
        name: tuple(round(min(max(v + rng.uniform(-0.08, 0.08), 0.0), 1.0), 3) for v in rgb)
        for name, rgb in COLOURS.items()
    }
    templates = (JUDGE_TEMPLATE, *rng.sample(TEMPLATE_POOL, 5))
    shapes = tuple(rng.sample(FAMILY_SHAPES, 5))
    while any(pair <= set(shapes) for pair in ALIKE):
        shapes = tuple(rng.sample(FAMILY_SHAPES, 5))
    return FamilyWorld(
        world_seed=seed,
        image_size=rng.choice(IMAGE_SIZES),
        colours=tuple(COLOURS),
        shapes=shapes,
        templates=templates,
        held_out_template=rng.choice(HELD_OUT_POOL),
        palette=palette,
        style=rng.choice(STYLES),
        backgrounds=tuple(rng.sample(FAMILY_BACKGROUNDS, 2)),
        clutter_slots=rng.randint(0, 3),
    )
