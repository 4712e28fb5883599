"""``configs/paper.yaml`` is the authors' released loop (``invert.py``), step for step.

The oracle owns its inputs. :data:`RELEASED` transcribes the released script's settings, and
:func:`released_loop` its loop for one prompt: a frozen open_clip model loaded here, its own tokenizer, size,
interpolation, mean and std (from ``open_clip.create_model_and_transforms``), a ``torch.rand`` start, the
released ``TotalVariation``, 13 repeated copies through Kornia's ``RandomAffine(30, (0.1, 0.1), (0.7, 1.2),
p=0.5, padding_mode='border')``, the bicubic ``Scale`` to the model's input, ``mean ||u - v||``, then backward,
``clip_grad_norm_`` to 1, clamping ``image.data`` to [0, 1] and Adam's step; at a milestone a bicubic
upsampling (not clamped) and a fresh Adam. Only the raw uniform numbers are shared with the project (the
only way to compare bit for bit); the oracle turns them into the affine's parameters with the released
ranges itself. tests/test_augment_distributions.py checks that those numbers draw what Kornia's sampler
draws.

The test runs it beside ``clip-inversion fit --config configs/paper.yaml`` on the bundled toy subject, through
all three released stages at a hundredth of the steps (64 -> 128 -> the model's input, here 16 -> 32 -> 64
px): ours with the schedule, steps and start size read from ``configs/paper.yaml``, the oracle with the
transcribed ones, both shrunk the same way. The images must agree after every step.
"""

import sys
import warnings
from pathlib import Path

import kornia.augmentation as K
import open_clip
import torch
import torch.nn.functional as F
import yaml
from lightning import Callback
from open_clip.transformer import QuickGELU
from torchvision.io import decode_image
from torchvision.transforms import InterpolationMode, Normalize, Resize

from clip_inversion.callbacks import InversionWriter, ResolutionSchedule
from clip_inversion.cli import main, run
from clip_inversion.core.augment import Augment, step_keys, uniforms
from clip_inversion.rundir import read_records

PROMPTS = ["a red circle", "a blue star"]
SUBJECT = Path(__file__).parents[1] / "clip_inversion" / "toyworld" / "models" / "toy-subject"
RELEASED = {  # invert.py's settings, transcribed
    "model_name": "ViT-B-16",
    "pretrained": "openai",
    "steps": 3400,
    "init_size": 64,
    "milestones": {900: 128, 1800: 224},
    "input_size": 224,  # ViT-B/16's: the last stage is the model's input size
    "copies": 13,
    "lr": 0.1,
    "tv": 0.005,
    "l1": 0.0,
    "grad_clip": 1.0,
    "affine": {"degrees": 30.0, "translate": 0.1, "scale": (0.7, 1.2), "p": 0.5, "padding_mode": "border"},
}
SHRINK = 100  # the test runs a hundredth of the steps


def released_tv(x: torch.Tensor) -> torch.Tensor:
    """The released ``TotalVariation`` (p = 2): per-channel L2 norms over (H, W), averaged, four directions."""
    x_wise = x[:, :, :, 1:] - x[:, :, :, :-1]
    y_wise = x[:, :, 1:, :] - x[:, :, :-1, :]
    diag_1 = x[:, :, 1:, 1:] - x[:, :, :-1, :-1]
    diag_2 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    return sum(d.norm(p=2, dim=(2, 3)).mean() for d in (x_wise, y_wise, diag_1, diag_2))


def shrunk(steps: int, init_size: int, milestones: dict, input_size: int) -> tuple[int, int, dict]:
    """A released schedule at a hundredth of the steps and the toy model's sizes: the model's input size stays
    the input size (``input_size`` px), every other size is a quarter."""

    def size(s: int) -> int:
        return input_size if s == RELEASED["input_size"] else s // 4

    return steps // SHRINK, size(init_size), {int(k) // SHRINK: size(int(v)) for k, v in milestones.items()}


def released_affine_params(u: torch.Tensor, size: int) -> dict:
    """Kornia ``RandomAffine`` parameters with the released ranges from ``(N, 8)`` uniforms (column 0: applied?,
    1: angle, 2-3: translations, 4: scale), for views of ``size`` px."""
    a = RELEASED["affine"]

    def between(column: int, low: float, high: float) -> torch.Tensor:
        low, high = torch.tensor(low), torch.tensor(high)
        return low + (high - low) * u[:, column]

    scale = between(4, *a["scale"])
    return {
        "batch_prob": u[:, 0] < a["p"],
        "angle": between(1, -a["degrees"], a["degrees"]),
        "translations": torch.stack(
            [between(2, -a["translate"], a["translate"]) * size, between(3, -a["translate"], a["translate"]) * size],
            -1,
        ),
        "center": torch.tensor([(size - 1) / 2, (size - 1) / 2]).expand(len(u), 2),
        "scale": torch.stack([scale, scale], -1),
        "shear_x": torch.zeros(len(u)),
        "shear_y": torch.zeros(len(u)),
    }


def released_loop(prompt: str, seed: int, steps: int, init_size: int, milestones: dict) -> list:
    """The released loop for one prompt, on the bundled toy subject as open_clip loads it. Returns the image
    after every step."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{SUBJECT}")
    model.requires_grad_(False).eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{SUBJECT}")
    (resize,) = [t for t in preprocess.transforms if isinstance(t, Resize)]
    (normalize,) = [t for t in preprocess.transforms if isinstance(t, Normalize)]
    assert resize.interpolation == InterpolationMode.BICUBIC  # the released Scale's interpolation
    input_size = (resize.size, resize.size) if isinstance(resize.size, int) else tuple(resize.size)
    mean, std = torch.tensor(normalize.mean).view(1, 3, 1, 1), torch.tensor(normalize.std).view(1, 3, 1, 1)
    a, copies = RELEASED["affine"], RELEASED["copies"]
    affine = K.RandomAffine(a["degrees"], [a["translate"]] * 2, a["scale"], p=a["p"], padding_mode=a["padding_mode"])
    stream = Augment([], copies)  # only for the shared uniform numbers of each step's views
    with torch.no_grad():
        text = model.encode_text(tokenizer([prompt]))
        text = text / text.norm(dim=-1, keepdim=True)
    image = torch.rand(1, 3, init_size, init_size, generator=torch.Generator().manual_seed(seed)).requires_grad_()
    optimizer = torch.optim.Adam([image], lr=RELEASED["lr"])
    history = []
    for i in range(steps):
        if i in milestones:
            image = F.interpolate(image.detach(), size=(milestones[i], milestones[i]), mode="bicubic")
            image.requires_grad_(True)
            optimizer = torch.optim.Adam([image], lr=RELEASED["lr"])
        optimizer.zero_grad()
        loss = RELEASED["tv"] * released_tv(image) + RELEASED["l1"] * torch.norm(image, p=1)
        u = uniforms(stream.view_keys(step_keys(torch.tensor([seed]), i)), 8)
        views = affine(image.repeat(copies, 1, 1, 1), params=released_affine_params(u, image.shape[-1]))
        views = F.interpolate(views, size=input_size, mode="bicubic")
        features = model.encode_image((views - mean) / std)
        features = features / features.norm(dim=-1, keepdim=True)
        loss = loss + torch.norm(features - text, dim=1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([image], RELEASED["grad_clip"])
        image.data = torch.clip(image.data, 0, 1)
        optimizer.step()
        history.append(image.detach().clone())
    return history


class Record(Callback):
    """Each prompt's seed and its image after every step (one prompt a batch, as the released loop runs)."""

    def __init__(self):
        self.images, self.seeds = {}, {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        (prompt,) = batch.prompts
        self.seeds[prompt] = batch.seeds[0]
        self.images.setdefault(prompt, []).append(pl_module.inverter.image().detach().clone())


def paper_cli(*args: str):
    """``clip-inversion fit --config configs/paper.yaml ARGS``, built but not run."""
    return run(["fit", "--config", "configs/paper.yaml", "--trainer.enable_progress_bar=false", *args], fit=False)


def test_paper_config_holds_the_released_settings(tmp_path):
    cli = paper_cli(f"--trainer.default_root_dir={tmp_path}")
    hp, augment = cli.model.hparams, cli.model.augment
    spec = cli.model.clip_spec
    assert (spec.model_name, spec.pretrained) == (RELEASED["model_name"], RELEASED["pretrained"])
    assert (hp.steps, hp.init_size, augment.copies) == (RELEASED["steps"], RELEASED["init_size"], RELEASED["copies"])
    assert (hp.tv, hp.l1, hp.grad_clip, hp.clamp, hp.distance) == (0.005, 0.0, 1.0, "before_step", "l2")
    assert not (hp.fused_warp or hp.channels_last or hp.compile) and cli.trainer.precision == "32-true"
    (affine,) = augment.transforms
    a, gen = RELEASED["affine"], affine._param_generator
    assert type(affine) is K.RandomAffine and affine.p == a["p"] and not affine.same_on_batch
    assert affine.flags["padding_mode"].name.lower() == a["padding_mode"]
    assert affine.flags["resample"].name.lower() == "bilinear" and not affine.flags["align_corners"]
    ranges = {
        name: (round(float(sampler.low), 6), round(float(sampler.high), 6)) if sampler is not None else None
        for name, sampler in (
            ("angle", gen.degree_sampler),
            ("translate_x", gen.translate_x_sampler),
            ("translate_y", gen.translate_y_sampler),
            ("scale", gen.scale_2_sampler),
            ("scale_y", gen.scale_4_sampler),
            ("shear_x", gen.shear_x_sampler),
            ("shear_y", gen.shear_y_sampler),
        )
    }
    t = a["translate"]
    assert ranges == (
        {
            "angle": (-a["degrees"], a["degrees"]),
            "translate_x": (-t, t),
            "translate_y": (-t, t),
            "scale": a["scale"],
            "scale_y": None,
            "shear_x": None,
            "shear_y": None,
        }
    )
    optimizer = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == RELEASED["lr"]
    assert optimizer.defaults["betas"] == (0.9, 0.999) and optimizer.defaults["weight_decay"] == 0
    assert cli.model.scheduler_factory is None
    (schedule,) = [c for c in cli.trainer.callbacks if isinstance(c, ResolutionSchedule)]
    assert schedule.milestones == RELEASED["milestones"]
    (writer,) = [c for c in cli.trainer.callbacks if isinstance(c, InversionWriter)]
    assert writer.minmax  # save_image(normalize=True, scale_each=True)


def test_paper_config_is_the_released_loop_step_for_step(tmp_path):
    paper = yaml.safe_load(Path("configs/paper.yaml").read_text())
    (schedule_spec,) = [c for c in paper["trainer"]["callbacks"] if c["class_path"].endswith("ResolutionSchedule")]
    input_size = 64  # the toy subject's
    steps, init_size, milestones = shrunk(
        paper["model"]["steps"], paper["model"]["init_size"], schedule_spec["init_args"]["milestones"], input_size
    )
    cli = paper_cli(
        "--model.clip.model_name=toy-subject",
        "--model.clip.pretrained=null",
        f"--model.init_size={init_size}",
        f"--model.steps={steps}",
        f"--data.prompts={PROMPTS}",
        "--data.batch_size=1",
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.accelerator=cpu",
    )
    (schedule,) = [c for c in cli.trainer.callbacks if isinstance(c, ResolutionSchedule)]
    schedule.milestones = milestones
    record = Record()
    cli.trainer.callbacks.append(record)
    cli.trainer.fit(cli.model, cli.datamodule)

    steps, init_size, milestones = shrunk(RELEASED["steps"], RELEASED["init_size"], RELEASED["milestones"], input_size)
    assert (steps, init_size, milestones) == (34, 16, {9: 32, 18: 64})  # three stages, the last the model's input
    for prompt in PROMPTS:
        oracle = released_loop(prompt, record.seeds[prompt], steps, init_size, milestones)
        ours = record.images[prompt]
        assert len(ours) == steps and [ours[i].shape[-1] for i in (8, 9, 17, 18)] == [16, 32, 32, 64]
        for step, (mine, theirs) in enumerate(zip(ours, oracle)):
            assert mine.shape == theirs.shape, f"{prompt!r}, step {step}: {mine.shape} against {theirs.shape}"
            torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0, msg=f"{prompt!r}, step {step}")
        assert any((image < 0).any() or (image > 1).any() for image in ours)  # the model saw unclamped images
        # saved as released: save_image(normalize=True, scale_each=True), min-max normalised on its own
        (line,) = [r for r in read_records(tmp_path) if r["prompt"] == prompt]
        saved = decode_image(str(tmp_path / line["image"])).float() / 255
        final = ours[-1][0]
        expected = (final - final.min()) / (final.max() - final.min())
        assert (saved - expected).abs().max() <= 0.5 / 255 + 1e-6


def plant_openai_weights(cache: Path) -> None:
    """``benchmarks/gpu_check.py``'s planting: random ViT-B/16 weights where open_clip looks for OpenAI's."""
    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    try:
        from gpu_check import plant_openai_weights as plant
    finally:
        sys.path.pop(0)
    plant(cache)


def test_paper_config_inverts_openai_weights_with_quick_gelu(tmp_path, monkeypatch):
    import huggingface_hub.constants

    import clip_inversion.module

    plant_openai_weights(tmp_path / "hub")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    built, load = [], clip_inversion.module.load_clip
    monkeypatch.setattr(clip_inversion.module, "load_clip", lambda spec: built.append(load(spec)) or built[-1])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(
            [
                "fit",
                "--config",
                "configs/paper.yaml",
                f"--model.clip.cache_dir={tmp_path / 'hub'}",
                "--model.steps=1",
                "--model.copies=1",
                f"--trainer.default_root_dir={tmp_path / 'run'}",
                "--trainer.accelerator=cpu",
                "--trainer.enable_progress_bar=false",
            ]
        )
    (clip,) = built
    modules = list(clip.model.modules())
    assert sum(isinstance(m, QuickGELU) for m in modules) == 24  # 12 image and 12 text blocks
    assert not any(type(m) is torch.nn.GELU for m in modules)
    assert not [w for w in caught if "QuickGELU mismatch" in str(w.message)]
    assert (tmp_path / "run" / "manifest.jsonl").is_file()  # the run went through


def test_the_model_is_preprocessed_as_open_clip_preprocesses_it():
    from clip_inversion.core.clip import CLIPSpec, load_clip

    clip = load_clip(CLIPSpec("toy-subject"))
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{SUBJECT}")
    (resize,) = [t for t in preprocess.transforms if isinstance(t, Resize)]
    (normalize,) = [t for t in preprocess.transforms if isinstance(t, Normalize)]
    assert clip.image_size == (resize.size, resize.size) and resize.interpolation == InterpolationMode.BICUBIC
    torch.testing.assert_close(clip.mean.flatten(), torch.tensor(normalize.mean))
    torch.testing.assert_close(clip.std.flatten(), torch.tensor(normalize.std))
    views = torch.rand(2, 3, 32, 32)  # smaller than the input: upsampled bicubic, as the released Scale does
    expected = F.interpolate(views, size=clip.image_size, mode="bicubic")
    features = clip.model.encode_image((expected - clip.mean) / clip.std)
    torch.testing.assert_close(clip.encode_image(views), F.normalize(features, dim=-1))
