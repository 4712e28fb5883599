"""The field's evaluation set: a seeded sample of MS-COCO captions, and their own images as the real images.

``python -m clip_inversion.studies.coco --annotations captions_val2014.json --images val2014/ --out data/coco``
samples ``--n`` images (10,000 by default) from a COCO captions file, with ``--seed``, and one caption of each,
and writes ``OUT/captions.txt`` (the prompts to invert, one a line) and ``OUT/real/manifest.jsonl`` (one
``{"id", "prompt", "image"}`` line a caption, the image given by its absolute path: nothing is copied), the
files ``configs/eval/coco.yaml`` names. A caption that the prompt syntax would read as a weighted target (a
trailing ``:<number>`` such as "10:30", or a ``|``) is written so that it stays one literal prompt.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from clip_inversion.core.targets import parse_target
from clip_inversion.errors import UsageError, first_line
from clip_inversion.rundir import MANIFEST


def literal(caption: str) -> str:
    """A caption as a prompt that means exactly it: one line, no ``|``, and ``:1`` after a trailing number."""
    text = " ".join(caption.replace("|", "/").split()).lstrip("#").strip()
    return text if parse_target(text)[0].value == text else f"{text}:1"


def write_coco(annotations: str | Path, images: str | Path, out: str | Path, n: int = 10_000, seed: int = 0) -> Path:
    """Sample ``n`` images and one caption each from a COCO captions file; write the captions and real images.

    Args:
        annotations: a COCO captions file (``captions_val2014.json``: ``images`` and ``annotations``).
        images: the folder holding its images (``val2014/``).
        out: where ``captions.txt`` and ``real/manifest.jsonl`` go.
        n: images (and captions) to sample.
        seed: the sample's seed.

    Raises:
        UsageError: an unreadable annotations file, a missing image folder or image, or ``n`` above the images.
    """
    try:
        data = json.loads(Path(annotations).read_text(encoding="utf-8"))
        files = {image["id"]: image["file_name"] for image in data["images"]}
        captions: dict[int, list[str]] = {}
        for a in sorted(data["annotations"], key=lambda a: a["id"]):
            captions.setdefault(a["image_id"], []).append(a["caption"])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UsageError(f"--annotations {annotations}: not a readable COCO captions file ({first_line(e)})") from e
    ids = sorted(i for i in files if captions.get(i))
    if not 1 <= n <= len(ids):
        raise UsageError(f"--n {n}: the annotations hold {len(ids)} captioned images")
    if not Path(images).is_dir():
        raise UsageError(f"--images {images}: no such directory")
    generator = torch.Generator().manual_seed(seed)
    chosen = [ids[k] for k in torch.randperm(len(ids), generator=generator)[:n].tolist()]
    rows = []
    for image_id in chosen:
        path = (Path(images) / files[image_id]).resolve()
        if not path.is_file():
            raise UsageError(f"--images {images}: no image {files[image_id]} (image id {image_id})")
        options = captions[image_id]
        caption = options[int(torch.randint(len(options), (1,), generator=generator))]
        rows.append({"id": str(image_id), "prompt": literal(caption), "image": str(path)})
    out = Path(out)
    (out / "real").mkdir(parents=True, exist_ok=True)
    (out / "captions.txt").write_text("".join(r["prompt"] + "\n" for r in rows), encoding="utf-8")
    (out / "real" / MANIFEST).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return out


def main(args: list[str] | None = None) -> None:
    """``python -m clip_inversion.studies.coco``: prints the two files written."""
    parser = argparse.ArgumentParser(description="Sample the COCO captions and real images of the field's protocol.")
    parser.add_argument("--annotations", required=True, help="COCO captions file, e.g. captions_val2014.json")
    parser.add_argument("--images", required=True, help="the folder of its images, e.g. val2014/")
    parser.add_argument("--out", default="data/coco", help="output folder (default: data/coco)")
    parser.add_argument("--n", type=int, default=10_000, help="captions to sample (default 10000)")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed (default 0)")
    ns = parser.parse_args(args)
    try:
        out = write_coco(ns.annotations, ns.images, ns.out, ns.n, ns.seed)
    except UsageError as e:
        parser.exit(2, f"{parser.prog}: error: {e}\n")
    print(out / "captions.txt", out / "real" / MANIFEST)


if __name__ == "__main__":
    main()
