"""A few steps of the toy-model trainer, through its command, end in a model that loads like any other."""

import json

import torch

from clip_inversion.core.clip import CLIPSpec, load_clip
from clip_inversion.toyworld.train import ShapeWorldBatches, main, multi_positive_clip_loss
from clip_inversion.toyworld.world import ShapeWorld


def test_training_smoke_run_exports_a_loadable_model(tmp_path):
    export = tmp_path / "model"
    main(
        [
            "fit",
            "--model.model_name=toy-byobnet",
            f"--model.export_dir={export}",
            "--model.noise_std=0.1",
            "--data.batch_size=16",
            "--data.train_batches=3",
            "--data.val_size=50",
            "--data.num_workers=0",
            "--trainer.max_steps=3",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    config = json.loads((export / "open_clip_config.json").read_text())
    assert config["model_cfg"]["vision_cfg"]["timm_model_name"] == "test_byobnet"
    assert config["preprocess_cfg"]["size"] == 64 and len(config["preprocess_cfg"]["mean"]) == 3
    clip = load_clip(CLIPSpec(f"local-dir:{export}"))
    assert clip.encode_text(["a red star"]).shape == (1, 64)


def test_multi_positive_loss_equals_clip_loss_for_unique_labels():
    from open_clip.loss import ClipLoss

    torch.manual_seed(0)
    image, text = torch.nn.functional.normalize(torch.randn(2, 8, 16), dim=-1)
    scale = torch.tensor(10.0)
    expected = ClipLoss()(image, text, scale)
    assert torch.allclose(multi_positive_clip_loss(scale * image @ text.T, torch.arange(8)), expected)
    # Duplicates of a class are positives, not negatives: ours prefers the two "a red star" pairs embedded
    # alike, ClipLoss prefers them apart.
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    alike = torch.nn.functional.one_hot(labels).float()
    apart = torch.eye(8)
    ours = {name: multi_positive_clip_loss(scale * e @ e.T, labels) for name, e in (("alike", alike), ("apart", apart))}
    clip = {name: ClipLoss()(e, e, scale) for name, e in (("alike", alike), ("apart", apart))}
    assert ours["alike"] < ours["apart"] and clip["apart"] < clip["alike"]


def test_a_pool_repeats_the_same_images_and_no_pool_never_does():
    pooled, fresh = (ShapeWorldBatches(ShapeWorld(), 6, 4, seed=3, pool=pool) for pool in (2, None))
    assert torch.equal(pooled[0][0], pooled[2][0]) and torch.equal(pooled[1][0], pooled[5][0])
    assert not torch.equal(pooled[0][0], pooled[1][0])
    assert torch.equal(fresh[0][0], pooled[0][0]) and not torch.equal(fresh[2][0], fresh[0][0])
