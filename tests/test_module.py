"""The LightningModule: only the image trains, the objective is right, the schedule and resume work."""

import pytest
import torch
from lightning import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from clip_inversion.callbacks import InversionWriter, ResolutionSchedule
from clip_inversion.core.augment import Augment
from clip_inversion.core.image import PixelImage
from clip_inversion.data import PromptDataModule
from clip_inversion.module import CLIPInversion

PROMPTS = ["a red circle", "a blue star", "a green square"]


def make_trainer(tmp_path, callbacks=(), **kwargs) -> Trainer:
    settings = dict(
        default_root_dir=tmp_path,
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        use_distributed_sampler=False,
    )
    return Trainer(callbacks=list(callbacks), **{**settings, **kwargs})


class Spy(Callback):
    """Records the optimizer and the image parameter at every step."""

    def __init__(self):
        self.optimizers, self.images = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.optimizers.append(trainer.optimizers[0])
        self.images.append(pl_module.inverter.image.pixels)


def test_only_the_image_trains_and_clip_gets_no_gradient(tmp_path):
    module = CLIPInversion(steps=3, init_size=16, copies=2)
    module.configure_model()
    clip = module.inverter.members[0].clip
    before = {k: v.clone() for k, v in clip.state_dict().items()}
    spy = Spy()
    make_trainer(tmp_path, [spy]).fit(module, PromptDataModule(PROMPTS, batch_size=3, steps=3))
    # weights and buffers (batch-norm statistics included) are untouched
    assert all(torch.equal(before[k], v) for k, v in clip.state_dict().items())
    trainable = [p for p in module.parameters() if p.requires_grad]
    assert len(trainable) == 1 and trainable[0] is module.inverter.image.pixels
    groups = spy.optimizers[-1].param_groups
    assert [p for g in groups for p in g["params"]] == [module.inverter.image.pixels]
    assert all(p.grad is None and not p.requires_grad for p in clip.parameters())
    assert not clip.training  # the trainer put the module in train mode; the CLIP stayed in eval


def test_loss_is_the_objective_computed_by_hand():
    module = CLIPInversion(init_size=16, copies=3, augmentations=[], tv=0.01, l1=0.001)
    module.configure_model()
    inverter, clip = module.inverter, module.inverter.members[0].clip
    inverter.start(PixelImage([5, 6], 16), PROMPTS[:2])
    x = inverter.image().detach()
    with torch.no_grad():
        resized = torch.nn.functional.interpolate(x, size=clip.image_size, mode="bicubic")
        u = clip.model.encode_image((resized - clip.mean) / clip.std)  # no augmentation: three equal copies
        v = clip.model.encode_text(clip.tokenizer(PROMPTS[:2]))
    cos = torch.nn.functional.cosine_similarity(u, v)
    distance = (2 - 2 * cos).sqrt()  # ||u - v|| of unit vectors
    # the released TV by hand: per channel, the L2 norm of each of the four difference images, then the mean
    tv = torch.zeros(2)
    for d in (x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]):
        tv += d.pow(2).sum(dim=(2, 3)).sqrt().mean(dim=1)
    for d in (x[..., 1:, 1:] - x[..., :-1, :-1], x[..., 1:, :-1] - x[..., :-1, 1:]):
        tv += d.pow(2).sum(dim=(2, 3)).sqrt().mean(dim=1)
    expected = distance + 0.01 * tv + 0.001 * x.abs().sum(dim=(1, 2, 3))
    torch.testing.assert_close(inverter(0)["loss"].detach(), expected, atol=1e-5, rtol=1e-5)


def test_the_objective_stays_fp32_inside_a_bf16_mixed_step(tmp_path, monkeypatch):
    from clip_inversion.core.inverter import Inverter

    seen = []
    terms_of = Inverter.terms

    def spy(self, images, step):
        assert torch.is_autocast_enabled("cpu")  # inside Lightning's bf16 autocast
        terms = terms_of(self, images, step)
        seen.append({k: v.dtype for k, v in terms.items()})
        return terms

    monkeypatch.setattr(Inverter, "terms", spy)
    module = CLIPInversion(steps=2, init_size=16, copies=2, l1=0.001)
    make_trainer(tmp_path, precision="bf16-mixed").fit(module, PromptDataModule(PROMPTS[:2], batch_size=2, steps=2))
    assert seen and all(dtypes == dict.fromkeys(dtypes, torch.float32) for dtypes in seen)
    assert set(seen[0]) == {"distance", "tv", "l1", "loss"}


def test_gradient_reaches_every_pixel_and_prompts_are_independent():
    module = CLIPInversion(init_size=16, copies=2, augmentations=[], tv=0.0)
    module.configure_model()
    inverter = module.inverter

    def grad_for(prompts, seeds):
        inverter.start(PixelImage(seeds, 16), prompts)
        inverter(0)["loss"].sum().backward()
        return inverter.image.pixels.grad

    together = grad_for(PROMPTS, [1, 2, 3])
    assert (together != 0).float().mean() == 1.0
    alone = grad_for(PROMPTS[1:2], [2])
    assert torch.allclose(together[1], alone[0], atol=1e-6, rtol=1e-4)


def test_copies_differ_inside_a_step():
    module = CLIPInversion(init_size=16, copies=8)  # the reference affine, p = 0.5
    views = module.augment(torch.rand(1, 3, 16, 16), torch.tensor([7]))
    assert len({tuple(v.flatten()[:50].tolist()) for v in views}) > 1


def test_upsample_gives_new_parameter_and_fresh_optimizer(tmp_path):
    module = CLIPInversion(steps=4, init_size=16, copies=2)
    spy = Spy()
    trainer = make_trainer(tmp_path, [ResolutionSchedule({2: 32}), spy])
    trainer.fit(module, PromptDataModule(PROMPTS[:2], batch_size=2, steps=4))
    sizes = [p.shape[-1] for p in spy.images]
    assert sizes == [16, 16, 32, 32]  # steps 0, 1 at 16 px; the milestone at step 2 applies to step 2
    assert spy.images[1] is not spy.images[2] and spy.optimizers[1] is not spy.optimizers[2]
    assert spy.optimizers[2].param_groups[0]["params"][0] is spy.images[2]
    assert len(spy.optimizers[2].state[spy.images[2]]) > 0 and spy.optimizers[2].state[spy.images[2]]["step"] == 2


def test_resume_from_a_checkpoint_taken_after_an_upsample(tmp_path):
    data = lambda: PromptDataModule(PROMPTS[:2], batch_size=2, steps=6)  # noqa: E731
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=4, save_top_k=-1)
    first = make_trainer(tmp_path, [ResolutionSchedule({2: 32}), ckpt], max_steps=4)
    first.fit(CLIPInversion(steps=6, init_size=16, copies=2), data())
    (path,) = (tmp_path / "ckpt").glob("*.ckpt")
    saved = torch.load(path, weights_only=True)
    assert saved["state_dict"]["inverter.image.pixels"].shape == (2, 3, 32, 32)
    assert not any(".clip." in k for k in saved["state_dict"])  # the frozen CLIP is not stored

    module = CLIPInversion(steps=6, init_size=16, copies=2)
    spy = Spy()
    writer = InversionWriter()
    trainer = make_trainer(tmp_path / "run", [ResolutionSchedule({2: 32}), spy, writer])
    trainer.fit(module, data(), ckpt_path=path)
    assert len(spy.images) == 2  # only the two remaining steps ran
    assert spy.images[0].shape == (2, 3, 32, 32)
    assert len((tmp_path / "run" / "manifest.jsonl").read_text().splitlines()) == 2


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="copies"):
        Augment(copies=0)
    with pytest.raises(ValueError, match="milestones"):  # checked in setup, before any model loads
        ResolutionSchedule({100: 64, 200: 32}).setup(None, CLIPInversion(steps=300), "fit")


def test_an_injected_scheduler_steps_every_step_and_restarts_with_the_optimizer(tmp_path):
    def halve(optimizer):
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    class LearningRates(Callback):
        def __init__(self):
            self.seen = []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.seen.append(optimizer.param_groups[0]["lr"])

    module = CLIPInversion(steps=4, init_size=16, copies=2, scheduler=halve)
    lrs = LearningRates()
    trainer = make_trainer(tmp_path, [ResolutionSchedule({2: 32}), lrs])
    trainer.fit(module, PromptDataModule(PROMPTS[:1], batch_size=1, steps=4))
    assert lrs.seen == [0.1, 0.05, 0.1, 0.05]  # halved after each step, fresh after the upsample at step 2
