"""Real images for a set of captions: the toy world's own renders, written as a folder that evaluations read.

``python -m clip_inversion.toyworld.real OUT --captions configs/prompts/toy-world.txt --per-caption 4`` (or
``--captions RUN_DIR``: the prompts of a run) renders ``per-caption`` fresh scenes of each caption's colour and
shape (random size, place, rotation and background; ``--world b``: world B's clutter) into ``OUT/images/`` and
lists them in ``OUT/manifest.jsonl``, one ``{"id", "prompt", "image", "seed"}`` line an image, as a run directory does:
``clip-inversion-evaluate RUN --real OUT`` compares a run with them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

from clip_inversion.data import prompt_seed, read_prompts
from clip_inversion.errors import UsageError
from clip_inversion.rundir import MANIFEST, atomic_save_image, read_records, safe_name
from clip_inversion.toyworld.evaluate import WORLDS, parse_caption
from clip_inversion.toyworld.world import ShapeWorld


def write_real(
    captions: Sequence[str],
    out: str | Path,
    per_caption: int = 4,
    seed: int = 0,
    image_size: int = 64,
    world: ShapeWorld | None = None,
) -> Path:
    """Render ``per_caption`` scenes of every caption into ``out`` (images and ``manifest.jsonl``); returns ``out``.

    Args:
        captions: captions naming one colour and one shape of the world each ("a red circle").
        out: the folder to write; an existing manifest there is replaced.
        per_caption: images a caption.
        seed: the renders' seed; each caption draws from its own seed derived from this one and the caption, so
            another ``seed`` gives held-out images of the same captions.
        image_size: side of the square images in pixels.
        world: the world whose scenes are rendered (``WORLDS[k].world``; default world A's).

    Raises:
        UsageError: a caption the world cannot render, or ``per_caption`` below 1.
    """
    if per_caption < 1:
        raise UsageError(f"--per-caption must be at least 1, not {per_caption}")
    world = dataclasses.replace(world or ShapeWorld(), image_size=image_size)
    scenes = []
    for caption in dict.fromkeys(captions):
        try:
            colour, shape = parse_caption(world, caption)
        except ValueError as e:
            raise UsageError(f"{e}: the toy world renders only its colour-shape captions (--captions)") from e
        own = dataclasses.replace(
            world, colours=(world.colours[colour],), shapes=(world.shapes[shape],), correlations={}
        )
        scenes.append((caption, own))
    out = Path(out)
    records = []
    for i, (caption, own) in enumerate(scenes):
        caption_seed = prompt_seed(seed, caption)
        images, _, _ = own.batch(per_caption, seed=caption_seed)
        for k, image in enumerate(images):
            path = Path("images") / f"{i:05d}-{k:03d}_{safe_name(caption)}.png"
            atomic_save_image(image, out / path)
            records.append({"id": f"{i:05d}-{k:03d}", "prompt": caption, "image": str(path), "seed": caption_seed})
    (out / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return out


def main(args: list[str] | None = None) -> None:
    """``python -m clip_inversion.toyworld.real OUT --captions FILE``: prints the manifest's path."""
    parser = argparse.ArgumentParser(description="Render the toy world's real images of some captions.")
    parser.add_argument("out", help="folder to write (images/ and manifest.jsonl)")
    parser.add_argument("--captions", required=True, help="captions file (.txt, .jsonl, .csv) or a run directory")
    parser.add_argument("--per-caption", type=int, default=4, help="images a caption (default 4)")
    parser.add_argument("--seed", type=int, default=0, help="another seed gives held-out images (default 0)")
    parser.add_argument("--world", choices=sorted(WORLDS), default="a", help="whose scenes: a (default) or b")
    ns = parser.parse_args(args)
    try:
        if Path(ns.captions).is_dir():  # a run directory: the prompts of its manifest
            captions = [r["prompt"] for r in read_records(ns.captions)]
            if not captions:
                raise UsageError(f"--captions {ns.captions}: a directory without {MANIFEST} lines")
        else:
            captions = [p.text for p in read_prompts(ns.captions)]
        print(write_real(captions, ns.out, ns.per_caption, ns.seed, world=WORLDS[ns.world].world) / MANIFEST)
    except UsageError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")


if __name__ == "__main__":
    main()
