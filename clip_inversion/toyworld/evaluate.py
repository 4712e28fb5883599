"""Zero-shot accuracy on the shape world: of a model on held-out scenes, and of a judge on inverted images.

``python -m clip_inversion.toyworld.evaluate RUN_DIR`` scores a finished inversion run whose prompts are
captions of the world, with the bundled judge.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_image

from clip_inversion.clip import CLIPSpec, FrozenCLIP, load_clip
from clip_inversion.toyworld.world import HELD_OUT_TEMPLATE, ShapeWorld


def world_accuracy(logits: Tensor, colour: Tensor, shape: Tensor, num_shapes: int) -> dict[str, float]:
    """Zero-shot accuracy over all colour-shape captions of a world.

    Args:
        logits: ``(N, C * S)`` image-caption similarities, captions ordered as ``ShapeWorld.captions_of``.
        colour: ``(N,)`` true colour indices.
        shape: ``(N,)`` true shape indices.
        num_shapes: ``S``.

    Returns:
        Fractions in [0, 1] under ``colour``, ``shape`` and ``caption`` (both right).
    """
    pred = logits.argmax(dim=1).cpu()
    right_colour, right_shape = pred // num_shapes == colour.cpu(), pred % num_shapes == shape.cpu()
    return {
        "colour": right_colour.float().mean().item(),
        "shape": right_shape.float().mean().item(),
        "caption": (right_colour & right_shape).float().mean().item(),
    }


@torch.no_grad()
def zero_shot_accuracy(
    clip: FrozenCLIP, world: ShapeWorld, n: int = 2000, seed: int = 10_000, template: str = HELD_OUT_TEMPLATE
) -> dict[str, float]:
    """A model's zero-shot accuracy on ``n`` fresh scenes, classified among all captions of ``template``."""
    text = clip.encode_text(world.captions_of(template))
    logits, colours, shapes = [], [], []
    for start in range(0, n, 500):
        images, _, scenes = world.batch(min(500, n - start), seed=seed + start)
        logits.append(clip.encode_image(images) @ text.T)
        colours.append(scenes.colour)
        shapes.append(scenes.shape)
    return world_accuracy(torch.cat(logits), torch.cat(colours), torch.cat(shapes), len(world.shapes))


def parse_caption(world: ShapeWorld, prompt: str) -> tuple[int, int]:
    """``(colour, shape)`` indices named in a prompt; raises ``ValueError`` if it names not exactly one of each."""
    words = prompt.lower().replace(",", " ").split()
    colours = [i for i, c in enumerate(world.colours) if c in words]
    shapes = [i for i, s in enumerate(world.shapes) if s in words]
    if len(colours) != 1 or len(shapes) != 1:
        raise ValueError(f"prompt {prompt!r} does not name exactly one colour and one shape of the world")
    return colours[0], shapes[0]


@torch.no_grad()
def judge_run(run_dir: str | Path, judge: CLIPSpec | None = None, world: ShapeWorld | None = None) -> dict[str, float]:
    """Score every image of a run's ``manifest.jsonl`` with a judge, among all captions of the world.

    Returns:
        ``colour``, ``shape`` and ``caption`` accuracy, ``judge_cosine`` (mean cosine to the prompt under the
        judge), ``subject_cosine`` (mean cosine recorded by the run) and ``images``.
    """
    run_dir, world = Path(run_dir), world or ShapeWorld()
    clip = load_clip(judge or CLIPSpec("toy-judge"))
    records = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines() if line.strip()]
    images = torch.stack([decode_image(str(run_dir / r["image"]), mode=ImageReadMode.RGB) for r in records]) / 255
    labels = torch.tensor([parse_caption(world, r["prompt"]) for r in records])
    emb = clip.encode_image(images)
    text = clip.encode_text(world.captions_of("a {colour} {shape}"))
    scores = world_accuracy(emb @ text.T, labels[:, 0], labels[:, 1], len(world.shapes))
    prompts = clip.encode_text([r["prompt"] for r in records])
    scores["judge_cosine"] = (emb * prompts).sum(dim=1).mean().item()
    scores["subject_cosine"] = sum(r["cosine"] for r in records) / len(records)
    scores["images"] = len(records)
    return scores


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score an inversion run of shape-world captions with a judge CLIP.")
    parser.add_argument("run_dir", help="directory holding manifest.jsonl")
    parser.add_argument("--judge", default="toy-judge", help="judge model name (default: the bundled toy-judge)")
    ns = parser.parse_args(args)
    print(json.dumps(judge_run(ns.run_dir, CLIPSpec(ns.judge)), indent=2))


if __name__ == "__main__":
    main()
