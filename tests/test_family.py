"""The family of worlds: drawn from one seed, rendered deterministically, trained once and cached."""

import dataclasses
import json

import pytest
import torch
from safetensors.torch import load_file

from clip_inversion.toyworld.cache import WORLD_JSON, Recipe, read_world, toy_world, train_world, world_dir
from clip_inversion.toyworld.evaluate import parse_caption
from clip_inversion.toyworld.family import (
    ALIKE,
    FAMILY_SHAPES,
    IMAGE_SIZES,
    STYLES,
    FamilyWorld,
    draw_world,
    family_fields,
)
from clip_inversion.toyworld.real import write_real
from clip_inversion.toyworld.towers import draw_towers
from clip_inversion.toyworld.world import COLOURS, SHAPES

TINY = {
    f"{kind}-{size}": Recipe(steps=2, batch_size=8, eval_scenes=10) for kind in ("resnet", "vit") for size in (32, 64)
}


def test_the_same_seed_draws_the_same_world_and_images():
    first, again = draw_world(7), draw_world(7)
    assert first == again and draw_towers(7, first.image_size) == draw_towers(7, again.image_size)
    assert torch.equal(first.batch(16, seed=3)[0], again.batch(16, seed=3)[0])
    assert first.batch(4, seed=3)[1] == again.batch(4, seed=3)[1]
    assert not torch.equal(first.batch(16, seed=3)[0], first.batch(16, seed=4)[0])


def test_seeds_vary_what_a_world_is_made_of():
    worlds = [draw_world(s) for s in range(40)]
    towers = [draw_towers(s, w.image_size) for s, w in enumerate(worlds)]
    assert {w.style for w in worlds} == set(STYLES)
    assert {w.image_size for w in worlds} == set(IMAGE_SIZES)
    assert len({w.shapes for w in worlds}) > 30 and {s for w in worlds for s in w.shapes} == set(FAMILY_SHAPES)
    assert len({w.backgrounds for w in worlds}) > 10 and len({w.clutter_slots for w in worlds}) == 4
    assert len({tuple(w.palette["red"]) for w in worlds}) == 40
    kinds = {(t.kind, t.patch) for pair in towers for t in pair}
    assert kinds == {("resnet", 0), *(("vit", size // 4) for size in IMAGE_SIZES)}
    assert {t.layers for pair in towers for t in pair if t.kind == "vit"} == {3, 4}
    assert {t.width for pair in towers for t in pair if t.kind == "vit"} == {48, 64}
    assert {subject.kind for subject, _ in towers} == {"vit", "resnet"}  # either may be the one inverted
    for (subject, judge), world in zip(towers, worlds):
        assert {subject.kind, judge.kind} == {"vit", "resnet"} and subject.seed != judge.seed
        vit = subject if subject.kind == "vit" else judge
        assert vit.image_size == world.image_size and vit.image_size // vit.patch == 4
    for world in worlds:
        assert world.colours == tuple(COLOURS) and len(world.shapes) == 5 and len(set(world.shapes)) == 5
        assert world.templates[0] == "a {colour} {shape}" and world.held_out_template not in world.templates
        for c, rgb in world.palette.items():  # the named colours kept, their exact RGB moved a little
            assert max(abs(a - b) for a, b in zip(rgb, COLOURS[c])) <= 0.08 + 1e-9


def test_a_family_world_renders_its_scenes():
    world = dataclasses.replace(draw_world(3), image_size=32, style="outlined", clutter_slots=3)
    images, captions, scenes = world.batch(64, seed=0)
    assert images.shape == (64, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    for caption, c, s in zip(captions, scenes.colour.tolist(), scenes.shape.tolist()):
        assert parse_caption(world, caption) == (c, s)
    # The shape is drawn where it is and in its colour: the pixel at its centre is the shape's colour.
    centre = ((scenes.centre * torch.tensor([1, -1]) + 1) / 2 * 32).long().clamp(0, 31)
    inside = images[torch.arange(64), :, centre[:, 1], centre[:, 0]]
    ring_or_crescent = torch.tensor([world.shapes[s] in ("ring", "crescent") for s in scenes.shape.tolist()])
    close = (inside - scenes.rgb).abs().amax(dim=1) < 0.05
    assert close[~ring_or_crescent].float().mean() > 0.8  # thin parts (an arrow's shaft) are rim
    # Each style changes the picture; the flat one paints the shape in one colour.
    styles = {s: dataclasses.replace(world, style=s).render(scenes) for s in STYLES}
    assert all(not torch.equal(styles["flat"], styles[s]) for s in STYLES if s != "flat")


def test_each_new_shape_is_its_own_and_fills_a_fair_part_of_its_frame():
    coords = torch.linspace(-1.2, 1.2, 97)
    y, x = torch.meshgrid(-coords, coords, indexing="ij")
    inside = family_fields(x[None], y[None])[0] < 0  # (11, H, W)
    assert inside.shape[0] == len(FAMILY_SHAPES)
    areas = inside.float().mean(dim=(1, 2))
    assert (areas > 0.08).all() and (areas < 0.7).all(), areas
    overlap = (inside[:, None] & inside[None]).float().sum(dim=(2, 3)) / (inside[:, None] | inside[None]).sum(
        dim=(2, 3)
    )
    alike = torch.zeros_like(overlap, dtype=torch.bool)
    for pair in ALIKE:
        i, j = (FAMILY_SHAPES.index(s) for s in pair)
        alike[i, j] = alike[j, i] = True
    others = ~alike & ~torch.eye(len(FAMILY_SHAPES), dtype=torch.bool)
    assert (overlap[others] < 0.8).all() and (overlap[alike] >= 0.8).all()  # IoU under 0.8 unless ALIKE
    assert not any(pair <= set(draw_world(s).shapes) for s in range(200) for pair in ALIKE)  # never in one world


def test_worlds_a_and_b_do_not_know_the_new_shapes():
    from clip_inversion.toyworld.world import ShapeWorld

    with pytest.raises(ValueError, match="hexagon"):
        ShapeWorld(shapes=("circle", "hexagon"))
    with pytest.raises(ValueError, match="unknown style"):
        FamilyWorld(shapes=SHAPES, style="glossy")


def test_real_renders_of_a_family_world(tmp_path):
    world = draw_world(5)
    out = write_real(
        world.captions_of()[:3], tmp_path / "real", per_caption=2, image_size=world.image_size, world=world
    )
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [c for c in world.captions_of()[:3] for _ in range(2)]


def _weights(cache, seed):
    return {
        role: load_file(str(world_dir(cache, seed) / role / "open_clip_model.safetensors"))
        for role in ("subject", "judge")
    }


def test_a_world_trains_from_its_seed_the_same_twice_and_is_cached(tmp_path, monkeypatch):
    seed = 2
    record = train_world(seed, tmp_path / "one", TINY)
    assert not record["cached"] and record["world"] == draw_world(seed).describe()
    assert set(record) >= {"world", "subject", "judge"}
    for role in ("subject", "judge"):
        accuracy = record[role]["accuracy"]["held_out_template"]
        assert set(accuracy) == {"colour", "shape", "caption"} and record[role]["seconds"] > 0
    again = train_world(seed, tmp_path / "two", TINY)
    one, two = _weights(tmp_path / "one", seed), _weights(tmp_path / "two", seed)
    for role in one:
        assert one[role].keys() == two[role].keys()
        assert all(torch.equal(one[role][k], two[role][k]) for k in one[role]), role
    assert again["subject"]["accuracy"] == record["subject"]["accuracy"]
    # Subject and judge are different models, and another world's are other weights.
    assert one["subject"].keys() != one["judge"].keys() or any(
        not torch.equal(one["subject"][k], one["judge"][k]) for k in one["subject"]
    )
    other = train_world(seed + 1, tmp_path / "one", TINY)
    assert not other["cached"]
    third = _weights(tmp_path / "one", seed + 1)["subject"]
    assert third.keys() != one["subject"].keys() or any(not torch.equal(third[k], one["subject"][k]) for k in third)

    # The cache answers without training; a different recipe trains again.
    import clip_inversion.toyworld.cache as cache

    def no_training(*args, **kwargs):
        raise AssertionError("trained although cached")

    monkeypatch.setattr(cache, "_train_roles", no_training)
    cached = train_world(seed, tmp_path / "one", TINY)
    assert cached["cached"] and cached["subject"] == record["subject"]
    assert json.loads((world_dir(tmp_path / "one", seed) / WORLD_JSON).read_text())["judge"] == record["judge"]
    with pytest.raises(AssertionError, match="trained although cached"):
        train_world(seed, tmp_path / "one", {k: dataclasses.replace(r, steps=3) for k, r in TINY.items()})

    # The cached models load and score the world's captions, as the protocol uses them.
    toy = toy_world(tmp_path / "one", seed)
    assert toy.world == draw_world(seed) and toy.subject.startswith("local-dir:")
    assert read_world(tmp_path / "nowhere", seed) is None


def test_the_command_trains_a_world_and_answers_help_without_torch(tmp_path, monkeypatch, capsys):
    import clip_inversion.toyworld.cache as cache
    from clip_inversion.usage import TRAIN_TOY_HELP, train_toy

    monkeypatch.setattr(cache, "RECIPES", TINY)
    train_toy(["--world-seed", "4", "--cache", str(tmp_path)])
    assert "world 4 (" in capsys.readouterr().out
    train_toy(["--world-seed=4", f"--cache={tmp_path}"])
    assert capsys.readouterr().out.rstrip().endswith("(cached)")
    train_toy(["--world-seed", "4", "--help"])
    assert capsys.readouterr().out == TRAIN_TOY_HELP
