import random

import kornia.augmentation as K
import pytest
import torch

from clip_inversion.core.augment import Augment, RandomColorShift, RandomResizedCrop, step_keys, uniforms
from clip_inversion.core.image import PixelImage


def keys(*seeds: int, step: int = 0) -> torch.Tensor:
    return step_keys(torch.tensor(seeds), step)


def test_pixel_image_starts_from_each_prompts_own_seed():
    together = PixelImage([1, 2, 3], size=16)()
    alone = PixelImage([2], size=16)()
    assert together.shape == (3, 3, 16, 16) and together.min() >= 0 and together.max() <= 1
    assert torch.equal(together[1], alone[0])
    assert not torch.equal(together[0], together[1])


def test_upsample_makes_a_new_parameter_of_the_new_size():
    image = PixelImage([0, 1], size=8)
    old = image.pixels
    image.upsample(16)
    assert image.pixels is not old and image.pixels.shape == (2, 3, 16, 16)
    assert isinstance(image.pixels, torch.nn.Parameter) and image.pixels.requires_grad
    # plain bicubic, not clamped (the released loop's upsampling; clamping is the inverter's choice)
    expected = torch.nn.functional.interpolate(old.detach(), size=(16, 16), mode="bicubic")
    assert torch.equal(image.pixels.detach(), expected)
    # bicubic upsampling keeps the picture: a mean-pool back down is close to the original
    assert torch.allclose(torch.nn.functional.avg_pool2d(image.pixels.detach(), 2), old.detach(), atol=0.2)


def test_project_clamps_to_unit_range():
    image = PixelImage([0], size=4)
    with torch.no_grad():
        image.pixels.mul_(3).sub_(1)
    image.project_()
    assert image.pixels.min() == 0 and image.pixels.max() == 1


def test_every_copy_draws_its_own_augmentation():
    augment = Augment([K.RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(0.7, 1.2), p=1.0)], copies=5)
    images = torch.rand(2, 3, 16, 16)
    views = augment(images, keys(1, 2))
    assert views.shape == (10, 3, 16, 16)
    flat = views.flatten(1)
    assert torch.cdist(flat, flat).fill_diagonal_(1).min() > 1e-3  # no two copies alike


def test_copies_of_a_prompt_are_grouped_and_gradients_flow():
    augment = Augment([], copies=3)
    images = torch.rand(2, 3, 8, 8, requires_grad=True)
    views = augment(images, keys(1, 2))
    assert torch.equal(views[0], images[0]) and torch.equal(views[2], images[0]) and torch.equal(views[3], images[1])
    views.sum().backward()
    assert torch.equal(images.grad, torch.full_like(images, 3.0))


def test_reference_pipeline_is_the_default():
    (affine,) = Augment(copies=13).transforms
    assert isinstance(affine, K.RandomAffine) and affine.p == 0.5
    flags = affine.flags
    assert flags["padding_mode"].name == "BORDER"


def test_color_shift_changes_colour_per_image():
    images = torch.full((4, 3, 8, 8), 0.5)
    shifted = RandomColorShift(shift=0.2, p=1.0)(images, uniforms(keys(1, 2, 3, 4), 7))
    means = shifted.mean(dim=(2, 3))
    assert not torch.allclose(means[0], means[1])
    assert torch.equal(RandomColorShift(shift=0.2, p=0.0)(images), images)


def smooth_images(n: int, size: int) -> torch.Tensor:
    """``(n, 3, size, size)`` low-frequency images, where bilinear and bicubic upsampling nearly agree."""
    coarse = torch.rand(n, 3, 6, 6, generator=torch.Generator().manual_seed(0))
    return torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def test_fused_warp_draws_the_same_warps_as_the_pipeline():
    augment = Augment(copies=8)  # the reference affine
    assert augment.fusable
    images, seeds = torch.rand(3, 3, 32, 32), keys(4, 5, 6)
    # at the image's own size: exactly the pipeline's warp (same draws, same kernel), whatever the image
    fused = augment.warp_to(images, (32, 32), seeds)
    assert fused.shape == (24, 3, 32, 32)
    assert torch.allclose(fused, augment(images, seeds), atol=1e-4)
    assert (augment.warp_to(images, (32, 32), keys(7, 8, 9)) - fused).abs().mean() > 0.05  # other draws differ
    # to a larger model size: warping then resizing, up to the upsampling kernel (bilinear, not bicubic)
    smooth = smooth_images(3, 32)
    resized = torch.nn.functional.interpolate(augment(smooth, seeds), size=(48, 48), mode="bicubic")
    assert (augment.warp_to(smooth, (48, 48), seeds) - resized).abs().mean() < 0.01
    # a prompt alone draws what it drew in its batch
    alone = augment.warp_to(images[1:2], (48, 48), seeds[1:2])
    assert torch.equal(alone, augment.warp_to(images, (48, 48), seeds)[8:16])


def test_fused_warp_applies_only_to_a_lone_random_affine():
    assert not Augment([], copies=2).fusable
    assert not Augment([K.RandomAffine(10, same_on_batch=True)], copies=2).fusable
    assert not Augment([K.RandomAffine(10), RandomColorShift()], copies=2).fusable


def test_fused_warp_passes_gradients_to_every_pixel():
    augment = Augment([K.RandomAffine(degrees=30, scale=(0.7, 1.2), p=1.0, padding_mode="border")], copies=4)
    images = torch.rand(2, 3, 16, 16, requires_grad=True)
    augment.warp_to(images, (24, 24), keys(1, 2)).sum().backward()
    assert images.grad.shape == images.shape and images.grad.abs().sum() > 0


def test_counter_based_uniforms_are_uniform_and_a_function_of_key_and_index_only():
    u = uniforms(keys(*range(100)), 1000)
    assert u.shape == (100, 1000) and u.min() >= 0 and u.max() < 1
    assert abs(u.mean().item() - 0.5) < 0.01 and abs(u.var().item() - 1 / 12) < 0.002
    assert torch.equal(uniforms(keys(42), 10), u[42:43, :10])  # a key's numbers whatever its batch
    assert not torch.equal(uniforms(keys(42), 10, stream=1), u[42:43, :10])  # each transform its own stream
    assert not torch.equal(uniforms(keys(42, step=1), 10), u[42:43, :10])  # and each step
    # neighbouring copies and steps are not correlated
    assert abs(torch.corrcoef(torch.stack([u[:, 0], u[:, 1]]))[0, 1]) < 0.25


def splitmix64(z: int) -> int:
    """The published SplitMix64 finaliser in Python's unbounded integers, the oracle for the tensor version."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % 2**64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % 2**64
    return z ^ (z >> 31)


@pytest.mark.parametrize("compiling", [False, True], ids=["wrapping int64", "16-bit limbs"])
def test_the_counter_based_hash_is_splitmix64_on_any_key(compiling, monkeypatch):
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: compiling)  # the limbs: what compiled code runs
    gamma, rng = 0x9E3779B97F4A7C15, random.Random(0)
    seeds = [0, 1, -1, 2**63 - 1, -(2**63)] + [rng.randrange(-(2**63), 2**63) for _ in range(195)]
    step = rng.randrange(2**40)
    # and a seed whose key has the sign bit alone in its top 16 bits, the edge of turning limbs into int64
    seeds.append(next(s for s in range(2**20) if splitmix64((s * gamma + step) % 2**64) >> 48 == 0x8000))
    expected = [splitmix64((s * gamma + step) % 2**64) for s in seeds]
    got = step_keys(torch.tensor(seeds), step)
    assert [k % 2**64 for k in got.tolist()] == expected  # the step keys, as int64 bit patterns
    view_keys = Augment([], copies=3).view_keys(got).view(-1, 3)
    assert [[v % 2**64 for v in row] for row in view_keys.tolist()] == [
        [splitmix64((k + (2**50 + c + 1) * gamma) % 2**64) for c in range(3)] for k in expected
    ]
    u = uniforms(got, 4, stream=2)
    assert u.tolist() == [
        [(splitmix64((k + ((2 << 40) + i + 1) * gamma) % 2**64) >> 40) / 2**24 for i in range(4)] for k in expected
    ]


def test_every_vectorised_transform_draws_per_prompt_whatever_the_batch(vectorised_augmentations):
    augment = Augment(vectorised_augmentations, copies=4)
    assert augment.vectorised
    images = torch.rand(3, 3, 16, 16)
    together = augment(images, keys(7, 8, 9, step=3))
    alone = augment(images[1:2], keys(8, step=3))
    assert torch.equal(together[4:8], alone)
    again = augment(images, keys(7, 8, 9, step=4))
    assert (again - together).abs().mean() > 0.01  # another step, other draws


def test_vectorised_affine_is_kornias_random_affine_on_the_same_parameters():
    augment = Augment(copies=16)  # the reference affine, p = 0.5
    images = torch.rand(2, 3, 24, 24)
    k = keys(3, 4, step=5)
    params = augment.affine_params(k, (24, 24))
    assert 0 < params["batch_prob"].float().mean() < 1  # some copies warped, some not
    assert params["angle"].abs().max() <= 30 and params["scale"].min() >= 0.7 and params["scale"].max() <= 1.2
    kornia_views = augment.transforms[0](images.repeat_interleave(16, dim=0), params=params)
    torch.testing.assert_close(augment(images, k), kornia_views, atol=1e-6, rtol=0)


def test_resized_crop_keeps_each_images_size_and_crops():
    crop = RandomResizedCrop(scale=(0.25, 0.25), ratio=(1.0, 1.0))
    ramp = torch.linspace(0, 1, 32).expand(1, 3, 32, 32)
    for size in (16, 32):
        image = torch.nn.functional.interpolate(ramp, size=(size, size), mode="bilinear")
        u = torch.full((1, RandomResizedCrop.draws), 0.5)
        u[0, 0], u[0, -2] = 0.0, 0.0  # applied (a quarter of the area, square), at the left edge
        out = crop(image, u)
        assert out.shape == image.shape
        assert out.max() < 0.55  # the left half of a left-to-right ramp, stretched to the full width
    with pytest.raises(ValueError, match="scale"):
        RandomResizedCrop(scale=(0.0, 1.5))


def test_a_transform_drawn_by_kornia_falls_back_to_a_loop_with_a_warning(caplog):
    augment = Augment([K.RandomGrayscale(p=0.5)], copies=4)
    assert "RandomGrayscale cannot be drawn per prompt" in caplog.text  # one logged line naming the setting
    assert not augment.vectorised
    images = torch.rand(2, 3, 8, 8)
    together = augment(images, keys(1, 2))
    assert torch.equal(together[4:8], augment(images[1:2], keys(2)))  # still each prompt's own draws
    assert not torch.equal(together, images.repeat_interleave(4, dim=0))


def test_vectorised_colour_jitter_is_kornias_on_the_same_factors_in_a_fixed_order():
    jitter = K.ColorJitter(0.2, 0.2, 0.2, 0.05, p=1.0)
    augment = Augment([jitter], copies=4)
    images, k = torch.rand(2, 3, 16, 16), keys(1, 2)
    u = uniforms(augment.view_keys(k), 5)
    gen = jitter._param_generator
    samplers = {"brightness": gen.brightness_sampler, "contrast": gen.contrast_sampler}
    samplers |= {"saturation": gen.saturation_sampler, "hue": gen.hue_sampler}
    params = {f"{name}_factor": s.low + (s.high - s.low) * u[:, i + 1] for i, (name, s) in enumerate(samplers.items())}
    expected = jitter.apply_transform(
        images.repeat_interleave(4, dim=0), {**params, "order": torch.arange(4)}, jitter.flags
    )
    torch.testing.assert_close(augment(images, k), expected)
