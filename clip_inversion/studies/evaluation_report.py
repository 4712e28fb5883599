"""The evaluation's report: ``evaluation.csv``, ``evaluation.md`` and TensorBoard logs, one row a run."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import TYPE_CHECKING

from clip_inversion.rundir import safe_name
from clip_inversion.studies.experiment import markdown_table
from clip_inversion.studies.features import ImageSet

if TYPE_CHECKING:
    from clip_inversion.studies.evaluate import Settings


def _cell(row: dict, key: str, fmt: str) -> str:
    """``value [low, high]`` (or ``value ± std``) for the Markdown table; ``-`` when missing."""
    value = row.get(key)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    text = format(value, fmt)
    if not math.isnan(row.get(f"{key}_low", math.nan)):
        text += f" [{format(row[f'{key}_low'], fmt)}, {format(row[f'{key}_high'], fmt)}]"
    elif f"{key}_std" in row:
        text += f" ± {format(row[f'{key}_std'], fmt)}"
    return text


def _table_row(row: dict, rows: list[dict]) -> dict[str, object]:
    compared = {}
    if "compared_prompts" in row:
        compared["FID/KID on"] = (
            f"{row['compared_prompts']} prompts: {row['compared_images']} vs {row['real_images']} real images"
        )
    return {
        "run": row["run"],
        "images": row["images"],
        "CLIPSIM": _cell(row, "clipsim", ".1f"),
        "accuracy": f"{_cell(row, 'accuracy', '.2f')} among {row['candidates']}",
        "FID": _cell(row, "fid", ".2f"),
        "KID": _cell(row, "kid", ".4f"),
        **compared,
        **({"IS": _cell(row, "inception_score", ".2f")} if "inception_score" in row else {}),
        "subject cosine": _cell(row, "subject_cosine", ".3f"),
        **({"note": row.get("note", "")} if any("note" in r for r in rows) else {}),
    }


def write_report(rows: list[dict], out: Path, settings: Settings, extractor: str, real: ImageSet | None) -> Path:
    """Write ``evaluation.csv``, ``evaluation.md`` and TensorBoard logs (``tensorboard/``) into ``out``."""
    from torch.utils.tensorboard import SummaryWriter

    out.mkdir(parents=True, exist_ok=True)
    judge = settings.judge + (f" ({settings.pretrained})" if settings.pretrained else "")
    columns = list(dict.fromkeys(k for row in rows for k in row))
    extra = {"judge": judge, "features": extractor, "bootstrap": settings.bootstrap, "seed": settings.seed}
    with open(out / "evaluation.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=[*columns, *extra])
        writer.writeheader()
        writer.writerows({**row, **extra} for row in rows)
    among = f"the {rows[0]['candidates']} of {settings.candidates}" if settings.candidates else "its run's"
    reals = f"{real.folder} ({len(real.paths)} images of {len(set(real.prompts))} captions)" if real else "none"
    warnings = [f"- warning: {row['run']}: {row['warning']}" for row in rows if row.get("warning")]
    text = "\n".join(
        [
            "# Evaluation",
            "",
            f"- judge: {judge}. CLIPSIM: 100 x its cosine between an image and its prompt; accuracy: how often it "
            f"classifies an image as its prompt among {among} prompts (how many: after the value)",
            f"- FID/KID features: {extractor}. Numbers are comparable only with numbers computed with the same "
            "extractor and real images"
            + (" (the literature's use InceptionV3)." if settings.features == "judge" else "."),
            f"- real images: {reals}; each run's images of the prompts with real images are compared with the real "
            "images of those prompts",
            f"- 95% intervals: bootstrap over prompts ({settings.bootstrap} resamples, seed {settings.seed}): "
            "percentile for CLIPSIM and accuracy (Wilson over prompts when the resamples do not vary), estimate ± "
            f"1.96 std for FID and KID, which resample real and generated images of the same prompts. KID: "
            f"{settings.kid_subsets} subsets of half the smaller set, at most 1000 images.",
            "",
            markdown_table([_table_row(row, rows) for row in rows]),
            "",
            *([*warnings, ""] if warnings else []),
        ]
    )
    (out / "evaluation.md").write_text(text, encoding="utf-8")
    with SummaryWriter(str(out / "tensorboard")) as writer:
        writer.add_text("evaluation", text)
        for row in rows:
            for key in ("clipsim", "accuracy", "fid", "kid", "inception_score"):
                if isinstance(row.get(key), float) and not math.isnan(row[key]):
                    writer.add_scalar(f"{safe_name(row['run'])}/{key}", row[key], 0)
    return out
