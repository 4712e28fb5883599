"""Zero-shot accuracy on the toy worlds: of a model on held-out scenes, and of a judge on inverted images.

``python -m clip_inversion.toyworld.evaluate RUN_DIR [--world b]`` scores a finished inversion run whose
prompts are captions of a world, with that world's bundled judge.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from clip_inversion.core.clip import CLIPSpec, FrozenCLIP, load_clip
from clip_inversion.studies.features import JudgeFeatures, extract, read_image_set
from clip_inversion.studies.metrics import JudgeCosine, ZeroShotAccuracy, mean_subject_cosine
from clip_inversion.toyworld.clutter import ClutterWorld
from clip_inversion.toyworld.world import ShapeWorld


@dataclass(frozen=True)
class ToyWorld:
    """A world with the bundled model inverted on it and the bundled judge that scores its inversions."""

    world: ShapeWorld = field(default_factory=ShapeWorld)
    subject: str = "toy-subject"
    judge: str = "toy-judge"


# World A: one shape on plain, gradient or noise backgrounds, ResNet subject and BYOB judge (world.py).
# World B: a shaded, outlined shape among grey specks on patterned backgrounds, two ViTs (clutter.py).
WORLDS: dict[str, ToyWorld] = {
    "a": ToyWorld(),
    "b": ToyWorld(ClutterWorld(), "toy-clutter-subject", "toy-clutter-judge"),
}


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
    clip: FrozenCLIP, world: ShapeWorld, n: int = 2000, seed: int = 10_000, template: str | None = None
) -> dict[str, float]:
    """A model's zero-shot accuracy on ``n`` fresh scenes, among all captions of ``template`` (default: held out)."""
    template = template or world.held_out_template
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
def judge_run(
    run_dir: str | Path, judge: CLIPSpec | None = None, world: ShapeWorld | None = None, per_caption: bool = False
) -> dict[str, float]:
    """Score every image of a run's ``manifest.jsonl`` with a judge, among all captions of the world.

    Args:
        run_dir: the run's directory.
        judge: the judge (default ``toy-judge``, world A's).
        world: the world whose captions were inverted (default world A); the judge chooses among its
            captions in its first template ("a {colour} {shape}").
        per_caption: also return, under ``per_caption``, ``{caption: {"colour", "caption", "judge_cosine"}}``,
            each caption's accuracies and cosine over its images (for paired comparisons of runs).

    Returns:
        ``colour``, ``shape`` and ``caption`` accuracy among ``among`` captions, ``judge_cosine`` (mean cosine to
        the prompt under the judge, the images read as ``clip-inversion-evaluate`` reads them), ``subject_cosine``
        (mean cosine recorded by the run) and ``images``.
    """
    world, clip = world or ShapeWorld(), load_clip(judge or CLIPSpec("toy-judge"))
    run = read_image_set(run_dir, "run")
    embeddings = extract(run.paths, JudgeFeatures(clip, ""))["features"]
    labels = torch.tensor([parse_caption(world, prompt) for prompt in run.prompts])
    accuracy = ZeroShotAccuracy(world.captions_of(), clip, levels=world_levels(world))
    accuracy.update(embeddings, labels[:, 0] * len(world.shapes) + labels[:, 1])
    cosine = JudgeCosine(list(dict.fromkeys(run.prompts)), clip)
    cosine.update(embeddings, run.prompts)
    scores = _world_scores(accuracy)
    scores["among"] = len(accuracy.prompts)
    scores["judge_cosine"] = cosine.compute().item()
    scores["subject_cosine"] = mean_subject_cosine(run.records)
    scores["images"] = len(run.paths)
    if per_caption:
        right, cosines = accuracy.per_prompt(), cosine.per_prompt()
        caption = {p: colour * len(world.shapes) + shape for p, (colour, shape) in zip(run.prompts, labels.tolist())}
        scores["per_caption"] = {
            p: {"colour": right["colour"][caption[p]].item(), "caption": right["prompt"][caption[p]].item(),
                "judge_cosine": cosines[j].item()}
            for j, p in enumerate(dict.fromkeys(run.prompts))
        }  # fmt: skip
    return scores


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Score an inversion run of shape-world captions with a judge CLIP.")
    parser.add_argument("run_dir", help="directory holding manifest.jsonl")
    parser.add_argument("--world", choices=sorted(WORLDS), default="a", help="the world of the captions (default: a)")
    parser.add_argument("--judge", help="judge model name (default: the world's bundled judge)")
    ns = parser.parse_args(args)
    toy = WORLDS[ns.world]
    print(json.dumps(judge_run(ns.run_dir, CLIPSpec(ns.judge or toy.judge), toy.world), indent=2))


if __name__ == "__main__":
    main()
