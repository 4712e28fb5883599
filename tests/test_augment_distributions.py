"""The counter-based draws against Kornia's own samplers: same arguments, same distributions.

:class:`~clip_inversion.core.augment.Augment` draws every parameter from its own counter-based uniforms
instead of Kornia's generators, so nothing else checks that it draws what Kornia would. Each test draws
20,000 views both ways and compares every parameter with a two-sample Kolmogorov-Smirnov test at the 0.1%
level (critical distance about 0.019): a 10% change of a range moves a uniform's CDF by about 0.05, a
probability of 0.5 -> 0.45 moves that of the 0/1 draw by 0.05. Pairs of parameters are also compared through
their difference, which tells independent draws from shared ones.
"""

import math

import kornia.augmentation as K
import pytest
import torch
from scipy.stats import ks_2samp, kstest

from clip_inversion.core.augment import Augment, RandomColorShift, RandomResizedCrop, step_keys
from clip_inversion.core.image import PixelImage

N = 20_000
ALPHA = 1e-3


def ours(transform: torch.nn.Module, size: int = 32) -> dict[str, torch.Tensor]:
    """The parameters Augment draws for ``transform`` on ``N`` views (2,000 prompts x 10 copies)."""
    augment = Augment([transform], copies=10)
    (params,) = augment.draw(step_keys(torch.arange(N // 10), 7), torch.Size([N, 3, size, size]))
    return params


def kornias(transform: torch.nn.Module, size: int = 32) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return transform.forward_parameters(torch.Size([N, 3, size, size]))


def same_distribution(mine: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    result = ks_2samp(mine.flatten().double().numpy(), theirs.flatten().double().numpy())
    assert result.pvalue > ALPHA, f"{what}: KS distance {result.statistic:.4f} (p = {result.pvalue:.1e})"


def test_the_ks_check_sees_a_ten_percent_change_of_a_range():
    torch.manual_seed(1)
    with pytest.raises(AssertionError):
        same_distribution(torch.rand(N) * 27, torch.rand(N) * 30, "degrees 27 against 30")
    with pytest.raises(AssertionError):
        same_distribution((torch.rand(N) < 0.45).float(), (torch.rand(N) < 0.5).float(), "p 0.45 against 0.5")


@pytest.mark.parametrize(
    "arguments",
    [
        {"degrees": 30, "translate": (0.1, 0.1), "scale": (0.7, 1.2), "padding_mode": "border"},  # the reference
        {"degrees": (-10, 40), "translate": (0.2, 0.05), "scale": (0.7, 1.2, 0.8, 1.4), "shear": (-5, 10, 2, 8)},
    ],
    ids=["reference", "four-scale-shear"],
)
def test_affine_draws_kornias_parameters(arguments):
    mine, theirs = ours(K.RandomAffine(**arguments, p=1.0)), kornias(K.RandomAffine(**arguments, p=1.0))
    for key in ("angle", "shear_x", "shear_y"):
        same_distribution(mine[key], theirs[key], key)
    for key in ("translations", "scale"):
        for i, axis in enumerate("xy"):
            same_distribution(mine[key][:, i], theirs[key][:, i], f"{key} {axis}")
        same_distribution(mine[key][:, 0] - mine[key][:, 1], theirs[key][:, 0] - theirs[key][:, 1], f"{key} x - y")
    torch.testing.assert_close(mine["center"], theirs["center"])
    half = {**arguments, "p": 0.5}
    same_distribution(ours(K.RandomAffine(**half))["batch_prob"], kornias(K.RandomAffine(**half))["batch_prob"], "p")


def test_flip_draws_kornias_probability():
    mine, theirs = ours(K.RandomHorizontalFlip(p=0.3)), kornias(K.RandomHorizontalFlip(p=0.3))
    same_distribution(mine["batch_prob"], theirs["batch_prob"], "p")


def test_colour_jitter_draws_kornias_factors():
    arguments = {"brightness": 0.1, "contrast": (0.7, 1.2), "saturation": 0.3, "hue": 0.05}
    mine, theirs = ours(K.ColorJitter(**arguments, p=1.0)), kornias(K.ColorJitter(**arguments, p=1.0))
    for key in ("brightness_factor", "contrast_factor", "saturation_factor", "hue_factor"):
        same_distribution(mine[key], theirs[key], key)
    half = K.ColorJitter(**arguments, p=0.5)
    same_distribution(ours(half)["batch_prob"], kornias(half)["batch_prob"], "p")


def test_noise_draws_kornias_noise():
    noise = K.RandomGaussianNoise(mean=0.02, std=0.05, p=1.0)
    mine, theirs = ours(noise, size=4), kornias(noise, size=4)
    same_distribution(mine["gaussian_noise"][:, 0, 0, 0], theirs["gaussian_noise"][:, 0, 0, 0], "noise")
    same_distribution(mine["gaussian_noise"][:, 2, 3, 1], theirs["gaussian_noise"][:, 2, 3, 1], "noise")
    half = K.RandomGaussianNoise(std=0.05, p=0.5)
    same_distribution(ours(half, size=4)["batch_prob"], kornias(half, size=4)["batch_prob"], "p")


@pytest.mark.parametrize("scale, ratio", [((0.6, 1.0), (3 / 4, 4 / 3)), ((0.08, 1.0), (0.5, 2.0))])
def test_crop_draws_kornias_area_aspect_and_place(scale, ratio):
    size = 2048  # Kornia rounds the crop to whole pixels: at this size that changes no distribution
    mine = ours(RandomResizedCrop(scale=scale, ratio=ratio))
    theirs = kornias(K.RandomResizedCrop((size, size), scale=scale, ratio=ratio), size=size)
    corners = theirs["src"]  # (N, 4, 2) pixel corners: top-left, top-right, bottom-right, bottom-left
    width = (corners[:, 1, 0] - corners[:, 0, 0] + 1) / size
    height = (corners[:, 2, 1] - corners[:, 1, 1] + 1) / size
    centre_x = (corners[:, 0, 0] + corners[:, 1, 0] + 1) / size - 1  # in [-1, 1] image coordinates
    same_distribution(mine["size"].prod(-1), width * height, "area")
    same_distribution(mine["size"][:, 0] / mine["size"][:, 1], width / height, "aspect")
    same_distribution(mine["centre"][:, 0], centre_x, "centre x")
    half = RandomResizedCrop(scale=scale, ratio=ratio, p=0.5)
    same_distribution(ours(half)["batch_prob"], kornias(K.RandomHorizontalFlip(p=0.5))["batch_prob"], "p")


def test_colour_shift_draws_plug_in_inversions_uniform_shift():
    mine = ours(RandomColorShift(shift=0.1, p=1.0))
    for key in ("mean", "log_scale"):
        for channel in range(3):
            result = kstest(mine[key][:, channel].double().numpy(), "uniform", args=(-0.1, 0.2))
            assert result.pvalue > ALPHA, f"{key}[{channel}]: KS distance {result.statistic:.4f}"
    applied = ours(RandomColorShift(shift=0.1, p=0.3))["batch_prob"].double().mean().item()
    assert abs(applied - 0.3) < 4 * math.sqrt(0.3 * 0.7 / N)


def test_pixel_image_starts_as_torch_rand_does():
    start = PixelImage(list(range(20)), 32)().detach()  # 20 prompts x 3,072 pixels
    torch.manual_seed(2)
    same_distribution(start, torch.rand(start.shape), "start pixels")
    assert kstest(start.flatten().double().numpy(), "uniform").pvalue > ALPHA
