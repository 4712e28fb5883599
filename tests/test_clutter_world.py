"""World B (the clutter world): deterministic, varied, captioned right, and not a copy of world A."""

import torch

from clip_inversion.toyworld.clutter import BACKGROUNDS_B, ClutterWorld, shape_fields
from clip_inversion.toyworld.world import ShapeWorld


def test_clutter_world_is_deterministic_for_a_seed():
    world = ClutterWorld()
    a_images, a_captions, _ = world.batch(16, seed=7)
    b_images, b_captions, _ = world.batch(16, seed=7)
    assert torch.equal(a_images, b_images) and a_captions == b_captions
    assert not torch.equal(a_images, world.batch(16, seed=8)[0])


def test_clutter_world_has_its_own_variety_and_captions():
    world = ClutterWorld()
    images, captions, scenes = world.batch(600, seed=0)
    assert images.shape == (600, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    assert set(scenes.colour.tolist()) == set(range(6)) and set(scenes.shape.tolist()) == set(range(5))
    assert set(scenes.background.tolist()) == set(range(len(BACKGROUNDS_B)))
    assert 0.4 < scenes.clutter.float().mean() < 0.6  # each of the 2 distractor slots filled half the time
    for caption, c, s in zip(captions, scenes.colour.tolist(), scenes.shape.tolist()):
        assert world.colours[c] in caption and world.shapes[s] in caption
    assert world.captions_of() == ShapeWorld().captions_of()  # the same 30 captions to invert and judge
    assert not set(world.templates[1:]) & set(ShapeWorld().templates)  # otherwise its own templates
    assert world.held_out_template not in world.templates + ShapeWorld().templates


def test_shape_fields_are_negative_inside_and_positive_outside():
    inside, outside = torch.tensor([[[0.0]]]), torch.tensor([[[1.2]]])
    assert (shape_fields(inside, inside) < 0).all() and (shape_fields(outside, outside) > 0).all()
    # The five shapes differ: a square covers (0.75, 0.75), a circle and a cross do not.
    corner = shape_fields(torch.tensor([[[0.75]]]), torch.tensor([[[0.75]]]))[0, :, 0, 0]
    assert corner[1] < 0 < corner[0] and corner[4] > 0


def test_the_shape_is_drawn_in_its_colour_at_its_centre():
    world = ClutterWorld(clutter_slots=0)
    scenes = world.sample(20, seed=1)
    scenes.outlined[:] = False
    images = world.render(scenes)
    col, row = ((scenes.centre * torch.tensor([1.0, -1.0]) + 1) / 2 * 64 - 0.5).round().long().unbind(1)
    for i in range(20):  # shading changes the colour by up to 20% across the object; at its centre, not at all
        assert torch.allclose(images[i, :, row[i], col[i]], scenes.rgb[i], atol=0.03)
