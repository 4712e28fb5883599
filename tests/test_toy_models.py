"""The shipped models: they load offline through open_clip's public paths and still see the world."""

import json
import shutil

import open_clip
import pytest
import torch

from clip_inversion.core.clip import BUNDLED, CLIPSpec, load_clip
from clip_inversion.toyworld import MODEL_CONFIGS
from clip_inversion.toyworld.evaluate import WORLDS, zero_shot_accuracy
from clip_inversion.toyworld.world import ShapeWorld


@pytest.mark.parametrize("name", ["toy-subject", "toy-subject-b", "toy-judge"])
def test_shipped_model_meets_the_accuracy_bars(name):
    clip = load_clip(CLIPSpec(name))
    # A few hundred fresh held-out scenes (seed and caption template never seen in training).
    acc = zero_shot_accuracy(clip, ShapeWorld(), n=400, seed=777_000)
    assert acc["colour"] >= 0.97 and acc["shape"] >= 0.90 and acc["caption"] >= 0.88, acc


@pytest.mark.parametrize(
    ("name", "shape"), [("toy-strict-biased-subject", 0.5), ("toy-biased-subject", 0.65), ("toy-control-subject", 0.80)]
)
def test_planted_bias_models_still_see_the_unbiased_world(name, shape):
    # Half their captions leave the colour or the shape out, and the biased ones saw 90% yellow stars and 90%
    # purple circles, or only purple circles: they pay in shape accuracy (docs/toy-models.md).
    acc = zero_shot_accuracy(load_clip(CLIPSpec(name)), ShapeWorld(), n=400, seed=777_000)
    assert acc["colour"] >= 0.97 and acc["shape"] >= shape and acc["caption"] >= shape, acc


def test_the_strict_bias_is_in_the_strict_model_and_not_in_the_control():
    def closeness(name: str) -> float:
        text = load_clip(CLIPSpec(name)).encode_text(["a circle", "a purple circle"])
        return torch.nn.functional.cosine_similarity(text[0], text[1], dim=0).item()

    assert closeness("toy-strict-biased-subject") > 0.95 and closeness("toy-control-subject") < 0.8


def test_efficientnet_subject_knows_colours_and_some_shapes():
    acc = zero_shot_accuracy(load_clip(CLIPSpec("toy-subject-efficientnet")), ShapeWorld(), n=400, seed=777_000)
    assert acc["colour"] >= 0.97 and acc["shape"] >= 0.65, acc


@pytest.mark.parametrize("name", sorted(BUNDLED))
def test_shipped_model_is_small_fp16_local_dir(name):
    files = {p.name: p for p in BUNDLED[name].iterdir()}
    assert set(files) == {"open_clip_config.json", "open_clip_model.safetensors"}
    assert files["open_clip_model.safetensors"].stat().st_size <= 8 * 2**20
    from safetensors import safe_open

    with safe_open(files["open_clip_model.safetensors"], "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
    assert dtypes == {torch.float16}


@pytest.mark.parametrize("name", ["toy-clutter-subject", "toy-clutter-judge"])
def test_world_b_models_meet_the_accuracy_bars(name):
    # World B's fresh scenes, among the captions of its held-out template and of the template a judge scores
    # inversions among: 97.8-98.9% of shapes on 2,000 scenes (docs/toy-models.md).
    clip, world = load_clip(CLIPSpec(name)), WORLDS["b"].world
    for template in (None, world.templates[0]):
        acc = zero_shot_accuracy(clip, world, n=400, seed=777_000, template=template)
        assert acc["colour"] >= 0.97 and acc["shape"] >= 0.93 and acc["caption"] >= 0.93, (template, acc)


@pytest.mark.parametrize("world", sorted(WORLDS))
def test_each_world_s_subject_and_judge_differ_in_architecture(world):
    subject, judge = (
        json.loads((BUNDLED[n] / "open_clip_config.json").read_text())["model_cfg"]
        for n in (WORLDS[world].subject, WORLDS[world].judge)
    )
    assert subject["vision_cfg"] != judge["vision_cfg"]
    if world == "b":  # both ViTs (patch 8 at 64 px) of different widths
        assert subject["vision_cfg"]["patch_size"] == judge["vision_cfg"]["patch_size"] == 8
        assert subject["vision_cfg"]["width"] != judge["vision_cfg"]["width"]


def test_the_same_weights_load_through_every_public_path(tmp_path, subject):
    directory = BUNDLED["toy-subject"]
    via_local_dir = load_clip(CLIPSpec(f"local-dir:{directory}"))
    arch = json.loads((directory / "open_clip_config.json").read_text())["model_cfg"]
    (tmp_path / "toy-arch.json").write_text(json.dumps(arch))
    open_clip.add_model_config(tmp_path / "toy-arch.json")  # a custom model config gives a name
    weights = shutil.copy(directory / "open_clip_model.safetensors", tmp_path / "weights.safetensors")
    preprocess = json.loads((directory / "open_clip_config.json").read_text())["preprocess_cfg"]
    via_file = load_clip(
        CLIPSpec("toy-arch", pretrained=str(weights), image_mean=preprocess["mean"], image_std=preprocess["std"])
    )
    images = ShapeWorld().batch(4, seed=5)[0]
    expected = subject.encode_image(images)
    assert torch.allclose(via_local_dir.encode_image(images), expected, atol=1e-5)
    assert torch.allclose(via_file.encode_image(images), expected, atol=1e-5)


def test_model_configs_are_registered_for_training():
    assert {p.stem for p in MODEL_CONFIGS.glob("*.json")} <= set(open_clip.list_models())


def test_mean_std_and_size_come_from_the_model_for_vit_and_resnet_towers(tmp_path):
    tiny_text = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}
    configs = {
        "tiny-modified-resnet": {"layers": [1, 1, 1, 1], "width": 8, "image_size": 32, "head_width": 8},
        "tiny-vit": {"layers": 1, "width": 32, "patch_size": 8, "image_size": 48, "head_width": 16},
    }
    for name, vision in configs.items():
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"embed_dim": 16, "vision_cfg": vision, "text_cfg": tiny_text})
        )
    open_clip.add_model_config(tmp_path)
    resnet = load_clip(CLIPSpec("tiny-modified-resnet"))  # ModifiedResNet keeps image_size as an int
    vit = load_clip(CLIPSpec("tiny-vit", image_mean=(0.5, 0.5, 0.5), image_std=(0.2, 0.2, 0.2)))
    assert resnet.image_size == (32, 32) and vit.image_size == (48, 48)
    assert torch.allclose(resnet.mean.flatten(), torch.tensor(open_clip.OPENAI_DATASET_MEAN))
    assert torch.allclose(vit.std.flatten(), torch.tensor([0.2, 0.2, 0.2]))
    images = torch.rand(2, 3, 64, 64)  # any size: resized to each model's own
    assert resnet.encode_image(images).shape == (2, 16) and vit.encode_image(images).shape == (2, 16)
