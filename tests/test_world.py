import pytest
import torch

from clip_inversion.toyworld.world import COLOURS, SHAPES, ShapeWorld


def test_world_is_deterministic_for_a_seed():
    world = ShapeWorld()
    a_images, a_captions, _ = world.batch(32, seed=7)
    b_images, b_captions, _ = world.batch(32, seed=7)
    c_images, _, _ = world.batch(32, seed=8)
    assert torch.equal(a_images, b_images) and a_captions == b_captions
    assert not torch.equal(a_images, c_images)


def test_world_has_enough_variety():
    world = ShapeWorld()
    images, captions, scenes = world.batch(600, seed=0)
    assert images.shape == (600, 3, 64, 64) and images.min() >= 0 and images.max() <= 1
    assert len(COLOURS) >= 6 and len(SHAPES) >= 5
    assert set(scenes.colour.tolist()) == set(range(6)) and set(scenes.shape.tolist()) == set(range(5))
    assert set(scenes.background.tolist()) == {0, 1, 2}
    assert len({c.replace(world.colours[0], "").split()[0] for c in captions}) > 1  # several templates


def test_caption_names_the_drawn_colour_and_shape():
    world = ShapeWorld()
    _, captions, scenes = world.batch(50, seed=3)
    for caption, c, s in zip(captions, scenes.colour.tolist(), scenes.shape.tolist()):
        assert world.colours[c] in caption and world.shapes[s] in caption


def test_shape_pixels_carry_the_shape_colour():
    world = ShapeWorld()
    scenes = world.sample(20, seed=1)
    images = world.render(scenes)
    col, row = ((scenes.centre + 1) / 2 * 64 - 0.5).round().long().unbind(1)
    for i in range(20):
        assert torch.allclose(images[i, :, row[i], col[i]], scenes.rgb[i], atol=0.02)


def test_planted_correlation_shows_in_the_samples():
    world = ShapeWorld(correlations={"star": {"yellow": 0.9}})
    scenes = world.sample(6000, seed=0)
    stars = scenes.shape == world.shapes.index("star")
    yellow = (scenes.colour[stars] == world.colours.index("yellow")).float().mean()
    assert 0.87 < yellow < 0.93
    others = (scenes.colour[~stars] == world.colours.index("yellow")).float().mean()
    assert 0.13 < others < 0.20  # still uniform for other shapes


def test_bad_correlations_are_refused():
    with pytest.raises(ValueError, match="more than 1"):
        ShapeWorld(correlations={"star": {"yellow": 0.9, "red": 0.3}})
    with pytest.raises(ValueError, match="unknown"):
        ShapeWorld(colours=("red", "teal"))
