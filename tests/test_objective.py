import math

import torch

from clip_inversion.objective import clip_grad_norm_per_image_, embedding_distance, l1_norm, total_variation


def test_l2_distance_is_the_reference_norm_of_unit_vectors():
    emb = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])  # one image, two copies
    target = torch.tensor([[1.0, 0.0]])
    # unit copies (0.6, 0.8) and (0, 1) against (1, 0)
    expected = (math.hypot(0.6 - 1, 0.8) + math.hypot(0 - 1, 1)) / 2
    assert torch.allclose(embedding_distance(emb, target, "l2"), torch.tensor([expected]))


def test_cosine_distance_is_one_minus_cosine():
    emb = torch.tensor([[[3.0, 4.0], [0.0, 2.0]]])
    target = torch.tensor([[2.0, 0.0]])
    assert torch.allclose(embedding_distance(emb, target, "cosine"), torch.tensor([((1 - 0.6) + (1 - 0.0)) / 2]))


def test_distance_is_per_prompt():
    emb = torch.randn(3, 5, 8)
    target = torch.randn(3, 8)
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
    clip_grad_norm_per_image_(grad, 1.0)
    assert torch.allclose(grad[0:1], reference.grad, atol=1e-6)
    assert torch.equal(grad[1], small)
    assert grad[2].norm() <= 1.0 + 1e-5
