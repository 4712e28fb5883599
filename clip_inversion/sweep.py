"""Model sweeps: the same prompts and settings through several CLIP models, outputs grouped by model.

A config describes the sweep in a ``sweep`` section next to the usual ones::

    sweep:
      models: [toy-subject, toy-judge, ViT-B-16@openai, ViT-B-16@laion2b_s34b_b88k]
      root: runs/models

and ``clip-inversion-sweep --config that.yaml`` runs ``clip-inversion fit`` once per model (``NAME`` or
``NAME@TAG_OR_FILE``) into ``ROOT/<model>/``, each with its own images, manifest and TensorBoard logs.
Every other option is passed on to ``fit``; ``--sweep.models`` and ``--sweep.root`` override the config.
Rerunning the command resumes the sweep: finished prompts are skipped.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

from clip_inversion.cli import exit_on_error, run
from clip_inversion.rundir import safe_name
from clip_inversion.usage import sweep_parser


def model_args(model: str) -> list[str]:
    """``NAME`` or ``NAME@TAG_OR_FILE`` -> the ``--model.clip`` options that choose it."""
    name, _, pretrained = model.partition("@")
    return [f"--model.clip.model_name={name}", f"--model.clip.pretrained={pretrained or 'null'}"]


def model_dir(root: str | Path, model: str) -> Path:
    """The run directory of one model of a sweep: its name as a slug, with a hash of the whole name when the
    slug had to be cut (two long paths that share their first 80 characters still get two directories)."""
    name = model.replace("@", "-")
    slug = safe_name(name, max_length=80)
    if slug != safe_name(name, max_length=len(name) + 1):
        slug = f"{slug[:71]}-{hashlib.sha256(model.encode()).hexdigest()[:8]}"
    return Path(root) / slug


def main(args: list[str] | None = None) -> None:
    """Entry point of ``clip-inversion-sweep``: prints each model's run directory as it finishes."""
    parser = sweep_parser()
    ns, rest = parser.parse_known_args(args)
    sweep = {"models": None, "root": "runs/models"}
    for path in ns.config:
        try:
            section = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("sweep") or {}
        except (OSError, yaml.YAMLError) as e:
            parser.error(f"cannot read config {path}: {e}")
        sweep.update({k: v for k, v in section.items() if v is not None})
    sweep.update({k: v for k, v in (("models", ns.models), ("root", ns.root)) if v is not None})
    if not sweep["models"]:
        parser.error("no models: give sweep.models in a config or --sweep.models")
    configs = [a for path in ns.config for a in ("--config", path)]
    for model in sweep["models"]:
        run_dir = model_dir(sweep["root"], model)
        chosen = [*model_args(model), f"--trainer.default_root_dir={run_dir}"]
        with exit_on_error("clip-inversion-sweep"):
            run(["fit", *configs, *rest, "--sweep.models=null", *chosen])
        print(f"{model}: {run_dir}", flush=True)


if __name__ == "__main__":
    main()
