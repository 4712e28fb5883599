import math

import torch

from clip_inversion.core.objective import clip_grad_norm_per_prompt_, embedding_distance, l1_norm, total_variation


def test_l2_distance_is_the_reference_norm_of_unit_vectors():
    emb = torch.tensor([[[0.6, 0.8], [0.0, 1.0]]])  # one image, two unit copies
    target = torch.tensor([[1.0, 0.0]])
    expected = (math.hypot(0.6 - 1, 0.8) + math.hypot(0 - 1, 1)) / 2
    assert torch.allclose(embedding_distance(emb, target, "l2"), torch.tensor([expected]))


def test_cosine_distance_is_one_minus_cosine():
    emb = torch.tensor([[[0.6, 0.8], [0.0, 1.0]]])
    target = torch.tensor([[1.0, 0.0]])
    assert torch.allclose(embedding_distance(emb, target, "cosine"), torch.tensor([((1 - 0.6) + (1 - 0.0)) / 2]))


def test_distance_is_fp32_under_autocast():
    emb = torch.nn.functional.normalize(torch.randn(2, 3, 8), dim=-1).bfloat16()
    target = torch.nn.functional.normalize(torch.randn(2, 8), dim=-1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        distance = embedding_distance(emb, target)
    assert distance.dtype == torch.float32
    expected = (emb.float() - target[:, None]).norm(dim=-1).mean(dim=1)
    torch.testing.assert_close(distance, expected)  # computed from the fp32 cast, not in bf16


def test_distance_is_per_prompt():
    emb = torch.nn.functional.normalize(torch.randn(3, 5, 8), dim=-1)
    target = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    together = embedding_distance(emb, target)
    alone = torch.cat([embedding_distance(emb[i : i + 1], target[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone)


def test_total_variation_matches_hand_computation():
    image = torch.tensor([[0.0, 1.0], [2.0, 4.0]]).expand(1, 1, 2, 2)
    horizontal = math.hypot(0 - 1, 2 - 4)
    vertical = math.hypot(0 - 2, 1 - 4)
    anti_diagonal = abs(2 - 1)  # image[1, 0] - image[0, 1]
    diagonal = abs(0 - 4)  # image[0, 0] - image[1, 1]
    expected = horizontal + vertical + anti_diagonal + diagonal
    assert torch.allclose(total_variation(image), torch.tensor([expected]))
    assert total_variation(torch.ones(2, 3, 5, 5)).abs().max() == 0


def test_total_variation_averages_per_channel_norms_as_released():
    # channel c is the hand-computed 2 x 2 image times (c + 1): its four norms scale by (c + 1), and the
    # released term averages the channels' norms: (1 + 2 + 3) / 3 = 2 times the single channel's value
    single = torch.tensor([[0.0, 1.0], [2.0, 4.0]])
    image = torch.stack([single * (c + 1) for c in range(3)])[None]
    one = total_variation(single.expand(1, 1, 2, 2))
    torch.testing.assert_close(total_variation(image), 2 * one)
    # not the norm over all channels together, which is sqrt(1 + 4 + 9) = 3.74 times the single channel's
    assert not torch.allclose(total_variation(image), math.sqrt(14) * one)


def test_l1_norm_sums_absolute_values_per_image():
    images = torch.stack([torch.full((3, 2, 2), 0.5), torch.full((3, 2, 2), -1.0)])
    assert torch.allclose(l1_norm(images), torch.tensor([6.0, 12.0]))


def test_gradient_clipping_is_per_image_and_matches_torch_for_one():
    grad = torch.randn(3, 3, 4, 4)
    grad[1] *= 1e-3  # a small gradient must stay as it is
    reference = grad[0:1].clone().requires_grad_()
    reference.grad = grad[0:1].clone()
    torch.nn.utils.clip_grad_norm_([reference], 1.0)
    small = grad[1].clone()
    clip_grad_norm_per_prompt_([grad], 1.0)
    assert torch.equal(grad[0:1], reference.grad)  # bit for bit: the released loop's clipping
    assert torch.equal(grad[1], small)
    assert grad[2].norm() <= 1.0 + 1e-5
