"""The core Inverter without a Trainer: a plain loop inverts, the clamp point is a choice, the step compiles."""

import kornia.augmentation as K
import pytest
import torch

from clip_inversion.core.augment import Augment
from clip_inversion.core.clip import FrozenCLIP
from clip_inversion.core.image import PixelImage
from clip_inversion.core.inverter import Inverter, Member

PROMPTS = ["a red circle", "a blue star"]


def inverter(subject, augmentations=None, copies: int = 4, **kwargs) -> Inverter:
    inv = Inverter([Member(subject)], Augment(augmentations, copies), tv=0.087, **kwargs)
    inv.start(PixelImage([1, 2], 32), PROMPTS)
    return inv


def plain_loop(inv: Inverter, steps: int) -> list[torch.Tensor]:
    optimizer = torch.optim.Adam(inv.image.parameters(), lr=0.1)
    images = []
    for step in range(steps):
        inv.step(optimizer, step)
        images.append(inv.image().detach().clone())
    return images


def test_a_plain_loop_inverts_without_a_trainer(subject):
    inv = inverter(subject)
    before = inv.cosine()
    plain_loop(inv, 25)
    assert (inv.cosine() > before + 0.2).all(), (before, inv.cosine())
    assert inv.image().min() >= 0 and inv.image().max() <= 1  # after_step: clamped after every step


def test_clamping_before_the_step_lets_the_models_see_the_steps_result(subject):
    images = plain_loop(inverter(subject, clamp="before_step"), 10)
    assert any(image.min() < 0 or image.max() > 1 for image in images)
    with pytest.raises(ValueError, match="clamp"):
        inverter(subject, clamp="sometimes")


def test_the_step_compiles_as_one_graph_with_every_vectorised_augmentation(subject, vectorised_augmentations):
    inv = inverter(subject, vectorised_augmentations)
    compiled = torch.compile(inv.terms, fullgraph=True, backend="aot_eager")  # a graph break raises
    terms = compiled(inv.image(), torch.tensor(3))
    terms["loss"].sum().backward()
    compiled_grad, inv.image.pixels.grad = inv.image.pixels.grad, None
    inv(torch.tensor(3))["loss"].sum().backward()
    torch.testing.assert_close(compiled_grad, inv.image.pixels.grad, atol=1e-6, rtol=1e-4)


class TinyCLIP(torch.nn.Module):
    """A CLIP-shaped model small enough to compile in seconds: a strided convolution and a projection."""

    def __init__(self) -> None:
        super().__init__()
        self.visual = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.Flatten(), torch.nn.Linear(128, 8)
        )
        self.text = torch.nn.Embedding(256, 8)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.visual(images)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens).mean(1)


def tiny_clip() -> FrozenCLIP:
    torch.manual_seed(0)
    tokenize = lambda prompts: torch.tensor([list(p.encode()[:8].ljust(8)) for p in prompts])  # noqa: E731
    return FrozenCLIP(TinyCLIP(), tokenize, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), (16, 16))


def test_the_step_compiles_with_the_default_backend():
    """What --model.compile runs: inductor generates and builds C++ (gcc) for the step, the counter-based draws
    included (a 64-bit hash in plain int64 overflows its code generation). Slow: about 4 minutes on the shared
    2-core machine at load 13, most of it inductor and gcc."""
    affine = K.RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(0.7, 1.2), p=0.5, padding_mode="border")
    inv = inverter(tiny_clip(), [affine], copies=2)
    compiled = torch.compile(inv.terms, fullgraph=True)
    terms = compiled(inv.image(), torch.tensor(3))
    terms["loss"].sum().backward()
    compiled_grad, inv.image.pixels.grad = inv.image.pixels.grad, None
    eager = inv(torch.tensor(3))
    eager["loss"].sum().backward()
    torch.testing.assert_close(terms["loss"], eager["loss"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(compiled_grad, inv.image.pixels.grad, atol=1e-6, rtol=1e-4)
