"""``configs/paper.yaml`` is the authors' released loop (``invert.py``), step for step.

:func:`released_loop` transcribes the loop of the released ``invert.py`` for one prompt: a frozen model, fp32,
the released ``TotalVariation``, 13 repeated copies through Kornia's ``RandomAffine``, the bicubic ``Scale`` to
the model's input, the model's mean/std, ``mean ||u - v||``, then backward, ``clip_grad_norm_`` to 1, clamping
``image.data`` to [0, 1] and Adam's step; at a milestone a bicubic upsampling (not clamped) and a fresh Adam.
The test runs it beside ``clip-inversion fit --config configs/paper.yaml`` on the bundled toy subject, from the
same start images and with the same affine draws (drawn once by the project, fed to Kornia's own
``RandomAffine`` in the oracle), through an upsampling milestone, and compares the images after every step.
"""

import warnings
from pathlib import Path

import kornia.augmentation as K
import open_clip
import torch
import torch.nn.functional as F
from lightning import Callback
from open_clip.transformer import QuickGELU
from safetensors.torch import save_file
from torchvision.io import decode_image

from clip_inversion.callbacks import ResolutionSchedule
from clip_inversion.cli import main, run
from clip_inversion.core.augment import step_keys
from clip_inversion.core.clip import FrozenCLIP
from clip_inversion.core.image import PixelImage
from clip_inversion.rundir import read_records

PROMPTS = ["a red circle", "a blue star"]


def released_tv(x: torch.Tensor) -> torch.Tensor:
    """The released ``TotalVariation`` (p = 2): per-channel L2 norms over (H, W), averaged, four directions."""
    x_wise = x[:, :, :, 1:] - x[:, :, :, :-1]
    y_wise = x[:, :, 1:, :] - x[:, :, :-1, :]
    diag_1 = x[:, :, 1:, 1:] - x[:, :, :-1, :-1]
    diag_2 = x[:, :, 1:, :-1] - x[:, :, :-1, 1:]
    return sum(d.norm(p=2, dim=(2, 3)).mean() for d in (x_wise, y_wise, diag_1, diag_2))


def released_loop(clip: FrozenCLIP, prompt: str, start: torch.Tensor, steps: int, milestones: dict, draws) -> list:
    """The released loop for one prompt from ``start`` ``(1, 3, S, S)``; ``draws(step, size)`` gives the affine's
    parameters of each step. Returns the image after every step."""
    model, copies, lr, tv, l1 = clip.model, 13, 0.1, 0.005, 0.0
    affine = K.RandomAffine(30, [0.1, 0.1], [0.7, 1.2], p=0.5, padding_mode="border")
    with torch.no_grad():
        text = model.encode_text(clip.tokenizer([prompt]))
        text = text / text.norm(dim=-1, keepdim=True)
    image = start.clone().requires_grad_()
    optimizer = torch.optim.Adam([image], lr=lr)
    history = []
    for i in range(steps):
        if i in milestones:
            image = F.interpolate(image.detach(), size=(milestones[i], milestones[i]), mode="bicubic")
            image.requires_grad_(True)
            optimizer = torch.optim.Adam([image], lr=lr)
        optimizer.zero_grad()
        loss = tv * released_tv(image) + l1 * torch.norm(image, p=1)
        views = affine(image.repeat(copies, 1, 1, 1), params=draws(i, image.shape[-1]))
        views = F.interpolate(views, size=clip.image_size, mode="bicubic")
        features = model.encode_image((views - clip.mean) / clip.std)
        features = features / features.norm(dim=-1, keepdim=True)
        loss = loss + torch.norm(features - text, dim=1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_([image], 1.0)
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


def test_paper_config_is_the_released_loop_step_for_step(tmp_path):
    steps, milestones = 8, {4: 64}  # 32 -> 64 px (the toy subject's input) after four steps, as 64 -> 128
    cli = run(
        [
            "fit",
            "--config",
            "configs/paper.yaml",
            "--model.clip.model_name=toy-subject",
            "--model.clip.pretrained=null",
            "--model.init_size=32",
            f"--model.steps={steps}",
            f"--data.prompts={PROMPTS}",
            "--data.batch_size=1",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.accelerator=cpu",
            "--trainer.enable_progress_bar=false",
        ],
        fit=False,
    )
    (schedule,) = [c for c in cli.trainer.callbacks if isinstance(c, ResolutionSchedule)]
    schedule.milestones = milestones
    record = Record()
    cli.trainer.callbacks.append(record)
    cli.trainer.fit(cli.model, cli.datamodule)

    inverter = cli.model.inverter
    clip = inverter.members[0].clip
    for prompt in PROMPTS:
        seeds = torch.tensor([record.seeds[prompt]])
        draws = lambda step, size, seeds=seeds: inverter.augment.affine_params(step_keys(seeds, step), (size, size))  # noqa: E731
        start = PixelImage([record.seeds[prompt]], 32)().detach()
        oracle = released_loop(clip, prompt, start, steps, milestones, draws)
        ours = record.images[prompt]
        assert len(ours) == steps and ours[-1].shape[-1] == 64
        for step, (mine, theirs) in enumerate(zip(ours, oracle)):
            torch.testing.assert_close(mine, theirs, atol=1e-6, rtol=0, msg=f"{prompt!r}, step {step}")
        assert any((image < 0).any() or (image > 1).any() for image in ours)  # the model saw unclamped images
        # saved as released: save_image(normalize=True, scale_each=True), min-max normalised on its own
        (line,) = [r for r in read_records(tmp_path) if r["prompt"] == prompt]
        saved = decode_image(str(tmp_path / line["image"])).float() / 255
        final = ours[-1][0]
        expected = (final - final.min()) / (final.max() - final.min())
        assert (saved - expected).abs().max() <= 0.5 / 255 + 1e-6


def plant_openai_weights(cache: Path) -> None:
    """Random ViT-B/16 weights where open_clip looks for the ``openai`` tag's, so its real path runs offline."""
    repo = cache / "models--timm--vit_base_patch16_clip_224.openai"
    revision = "0" * 40
    (repo / "snapshots" / revision).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    weights = open_clip.create_model("ViT-B-16").state_dict()
    weights = {k: v.half().contiguous() for k, v in weights.items()}
    save_file(weights, repo / "snapshots" / revision / "open_clip_model.safetensors")


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
