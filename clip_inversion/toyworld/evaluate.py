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

from clip_inversion.core.clip import CLIPSpec, FrozenCLIP, load_clip
from clip_inversion.rundir import read_manifest
from clip_inversion.studies.metrics import JudgeCosine, ZeroShotAccuracy, mean_subject_cosine
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


def world_levels(world: ShapeWorld) -> dict[str, list[str]]:
    """The colour and the shape of each of the world's captions (``captions_of`` order), for ZeroShotAccuracy."""
    return {
        "colour": [c for c in world.colours for _ in world.shapes],
        "shape": [s for _ in world.colours for s in world.shapes],
    }


def _world_scores(accuracy: ZeroShotAccuracy) -> dict[str, float]:
    scores = {k: v.item() for k, v in accuracy.compute().items()}
    return {"colour": scores["colour"], "shape": scores["shape"], "caption": scores["prompt"]}


@torch.no_grad()
def zero_shot_accuracy(
    clip: FrozenCLIP, world: ShapeWorld, n: int = 2000, seed: int = 10_000, template: str = HELD_OUT_TEMPLATE
) -> dict[str, float]:
    """A model's zero-shot accuracy on ``n`` fresh scenes, classified among all captions of ``template``."""
    accuracy = ZeroShotAccuracy(world.captions_of(template), clip, levels=world_levels(world))
    for start in range(0, n, 500):
        images, _, scenes = world.batch(min(500, n - start), seed=seed + start)
        accuracy.update(images, scenes.colour * len(world.shapes) + scenes.shape)
    return _world_scores(accuracy)


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
    world, clip = world or ShapeWorld(), load_clip(judge or CLIPSpec("toy-judge"))
    inversions = read_manifest(run_dir)
    images = torch.stack([inv.image for inv in inversions])
    labels = torch.tensor([parse_caption(world, inv.prompt) for inv in inversions])
    accuracy = ZeroShotAccuracy(world.captions_of("a {colour} {shape}"), clip, levels=world_levels(world))
    accuracy.update(images, labels[:, 0] * len(world.shapes) + labels[:, 1])
    prompts = [inv.prompt for inv in inversions]
    cosine = JudgeCosine(list(dict.fromkeys(prompts)), clip)
    cosine.update(images, prompts)
    scores = _world_scores(accuracy)
    scores["judge_cosine"] = cosine.compute().item()
    scores["subject_cosine"] = mean_subject_cosine(inv.record for inv in inversions)
    scores["images"] = len(inversions)
    return scores


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score an inversion run of shape-world captions with a judge CLIP.")
    parser.add_argument("run_dir", help="directory holding manifest.jsonl")
    parser.add_argument("--judge", default="toy-judge", help="judge model name (default: the bundled toy-judge)")
    ns = parser.parse_args(args)
    print(json.dumps(judge_run(ns.run_dir, CLIPSpec(ns.judge)), indent=2))


if __name__ == "__main__":
    main()
