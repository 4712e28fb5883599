"""Targets: parsing, encoding (prompts, images, saved embeddings, weights) and their effect on inversion."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torchvision.utils import save_image

from clip_inversion.cli import run
from clip_inversion.core.augment import Augment
from clip_inversion.core.clip import CLIPSpec, load_clip
from clip_inversion.core.image import PixelImage
from clip_inversion.core.inverter import Inverter, Member
from clip_inversion.core.targets import Term, encode_targets, load_embedding, load_image, parse_target
from clip_inversion.errors import UsageError
from clip_inversion.toyworld.world import ShapeWorld


def test_parse_weights_negative_terms_and_colons(tmp_path):
    assert parse_target("a red circle") == [Term("text", "a red circle", 1.0)]
    assert parse_target(" a red circle:1 | a star:0.5 | blue:-0.3 ") == [
        Term("text", "a red circle", 1.0),
        Term("text", "a star", 0.5),
        Term("text", "blue", -0.3),
    ]
    assert parse_target("note: a red circle") == [Term("text", "note: a red circle", 1.0)]
    image, emb = tmp_path / "x.png", tmp_path / "e.npy"
    save_image(torch.rand(3, 8, 8), image)
    np.save(emb, np.ones(64, dtype=np.float32))
    assert [t.kind for t in parse_target(f"{image}:2 | {emb}:-1 | a star")] == ["image", "embedding", "text"]


@pytest.mark.parametrize(
    "spec, message",
    [("a star:-1", "positive"), ("a star | :2", "empty"), ("missing.png | a star", "no image file")],
)
def test_bad_targets_are_refused(spec, message):
    with pytest.raises(UsageError, match=message):
        parse_target(spec)


def test_one_positive_prompt_is_exactly_the_text_embedding(subject):
    prompts = ["a red circle", "a blue star"]
    expected = subject.encode_text(prompts)
    assert torch.equal(encode_targets(subject, prompts), expected)
    assert torch.equal(encode_targets(subject, ["a red circle:3", "a blue star"]), expected)
    # mixed with a weighted target in the same batch, the plain one is still the text embedding
    mixed = encode_targets(subject, ["a red circle", "a blue star:1 | a red star:-0.5"])
    assert torch.allclose(mixed[0], expected[0], atol=1e-6)


def test_weighted_target_is_the_normalised_weighted_sum(subject):
    red, star, blue = subject.encode_text(["a red circle", "a star", "blue"])
    (target,) = encode_targets(subject, ["a red circle:1 | a star:0.5 | blue:-0.3"])
    assert torch.allclose(target, F.normalize(red + 0.5 * star - 0.3 * blue, dim=0), atol=1e-6)
    assert target @ blue < red @ blue  # the negative term pushes away


def test_image_and_saved_embedding_terms(tmp_path, subject):
    image = ShapeWorld().batch(1, seed=3)[0][0]
    save_image(image, tmp_path / "scene.png")
    stored = load_image(tmp_path / "scene.png")
    (from_image,) = encode_targets(subject, [str(tmp_path / "scene.png")])
    assert torch.allclose(from_image, subject.encode_image(stored[None])[0], atol=1e-6)
    emb = subject.encode_text(["a green cross"])  # (1, D)
    np.save(tmp_path / "e.npy", emb.numpy())
    torch.save(emb[0], tmp_path / "e.pt")
    save_file({"embedding": emb}, tmp_path / "e.safetensors")
    for suffix in ("npy", "pt", "safetensors"):
        assert torch.allclose(load_embedding(tmp_path / f"e.{suffix}"), emb[0])
        (target,) = encode_targets(subject, [f"{tmp_path / f'e.{suffix}'}"])
        assert torch.allclose(target, emb[0], atol=1e-6)
    torch.save(torch.ones(3, 64), tmp_path / "many.pt")
    with pytest.raises(UsageError, match="not one embedding"):
        encode_targets(subject, [str(tmp_path / "many.pt")])


def invert(specs: list[str], steps: int = 30, copies: int = 2, size: int = 32) -> Inverter:
    """The core's plain optimisation loop (no Trainer): fast and deterministic."""
    inverter = Inverter([Member(load_clip(CLIPSpec("toy-subject")))], Augment(None, copies), tv=0.087)
    inverter.start(PixelImage(list(range(len(specs))), size), specs)
    optimizer = torch.optim.Adam(inverter.image.parameters(), lr=0.1)
    for step in range(steps):
        inverter.step(optimizer, step)
    return inverter


def test_a_negative_term_lowers_the_final_cosine_to_its_prompt():
    plain = invert(["a red circle", "a blue star"])
    pushed = invert(["a red circle | a red square:-0.6", "a blue star | a blue cross:-0.6"])
    clip = plain.members[0].clip
    negatives = clip.encode_text(["a red square", "a blue cross"])
    with torch.no_grad():
        cos_plain = (clip.encode_image(plain.image()) * negatives).sum(1)
        cos_pushed = (clip.encode_image(pushed.image()) * negatives).sum(1)
    assert (cos_pushed < cos_plain - 0.05).all(), (cos_plain, cos_pushed)


def test_an_image_targets_inversion_matches_its_source_under_the_judge(tmp_path, judge):
    scenes = ShapeWorld().batch(4, seed=11)[0]
    paths = []
    for i, scene in enumerate(scenes):
        save_image(scene, tmp_path / f"scene{i}.png")
        paths.append(str(tmp_path / f"scene{i}.png"))
    module = invert(paths, steps=60, copies=4)
    with torch.no_grad():
        cos = judge.encode_image(module.image()) @ judge.encode_image(torch.stack([load_image(p) for p in paths])).T
    # each inversion is closer, under an independent model, to its own source than to any other scene
    assert (cos.diag()[:, None] > cos - torch.eye(4)).all(), cos


CONFIG = str(Path(__file__).parents[1] / "configs" / "quickstart.yaml")


def test_targets_from_a_jsonl_file_with_a_pyramid_and_an_ensemble_from_yaml(tmp_path):
    save_image(ShapeWorld().batch(1, seed=2)[0][0], tmp_path / "scene.png")
    rows = [{"id": "mix", "prompt": "a red circle:1 | a star:0.5 | blue:-0.3"}, {"prompt": f"{tmp_path / 'scene.png'}"}]
    (tmp_path / "targets.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "extra.yaml").write_text(
        "model:\n  image:\n    class_path: clip_inversion.core.image.PyramidImage\n    init_args: {std: 0.05}\n"
        "  ensemble: [{model_name: toy-judge}]\n  ensemble_weights: [2, 1]\n"
    )
    cli = run(
        [
            *("fit", "--config", CONFIG, "--config", str(tmp_path / "extra.yaml"), "--model.steps=2"),
            *("--data.prompts=null", f"--data.prompts_file={tmp_path / 'targets.jsonl'}"),
            *(f"--trainer.default_root_dir={tmp_path / 'run'}", "--trainer.enable_progress_bar=false"),
            *("--trainer.logger=false", "--trainer.callbacks=[]"),
        ]
    )
    assert type(cli.model.inverter.image).__name__ == "PyramidImage" and len(cli.model.inverter.members) == 2
    records = [json.loads(line) for line in (tmp_path / "run" / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in records] == [r["prompt"] for r in rows] and records[0]["id"] == "mix"


def test_a_missing_target_file_fails_before_the_model_loads(tmp_path, monkeypatch):
    import clip_inversion.module

    def no_loading(spec):
        raise AssertionError("the model was loaded before the targets were checked")

    monkeypatch.setattr(clip_inversion.module, "load_clip", no_loading)
    args = ["fit", "--config", CONFIG, "--data.prompts=[a star|gone.png:-1]", f"--trainer.default_root_dir={tmp_path}"]
    with pytest.raises(UsageError, match="no image file"):
        run(args)


def test_a_damaged_embedding_file_is_a_usage_error(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"not a tensor")
    with pytest.raises(UsageError, match="cannot load the embedding"):
        load_embedding(tmp_path / "bad.pt")
