"""The ``clip-inversion`` command's entry point and its short help.

``--help`` prints the options a user changes without importing torch, Lightning or a model, so it answers at
once; ``--help=full`` (or ``--help-all``) prints every option with its default, from the full parser
(:mod:`clip_inversion.cli`), which everything else goes to.
"""

from __future__ import annotations

import sys

DESCRIPTION = "Invert a frozen CLIP model: optimise an image for each prompt until the model sees the prompt in it."
FIT_DESCRIPTION = "Invert prompts into images in a run directory (images, snapshots, manifest.jsonl)."
SHORT, FULL = ("-h", "--help"), ("--help=full", "--help-all")

TOP_HELP = f"""usage: clip-inversion [-h] {{fit}} ...

{DESCRIPTION}

commands:
  fit         {FIT_DESCRIPTION}

  clip-inversion fit --config configs/quickstart.yaml     the quickstart: six prompts, the bundled toy CLIP
  clip-inversion fit --help                               the options a run changes

options:
  -h, --help  show this help; --help=full shows the full parser's
"""

FIT_HELP = f"""usage: clip-inversion fit [-c CONFIG ...] [--OPTION=VALUE ...]

{FIT_DESCRIPTION}
Options given later override earlier ones and the configs; --help=full lists every option with its default.

what to invert:
  -c, --config CONFIG            a YAML config, e.g. configs/quickstart.yaml; repeat to compose (last wins)
  --data.prompts '[P, ...]'      prompts to invert, e.g. '[a red circle, a blue star]'
  --data.prompts_file FILE       a .txt (a prompt a line), .jsonl or .csv file of prompts
  --model.clip.model_name NAME   the CLIP to invert: toy-subject, ViT-B-16, local-dir:DIR, hf-hub:ORG/REPO
  --model.clip.pretrained TAG    its weights: a pretrained tag (openai, ...) or a weights file

how:
  --model.steps N                optimisation steps for each batch of prompts
  --model.init_size PIXELS       the images' side at the start (a ResolutionSchedule may grow it)
  --model.copies N               augmented copies of each image at each step
  --model.augmentations LIST     Kornia augmentations, e.g. from configs/augment/; [] for none
  --model.tv WEIGHT              total-variation weight: larger gives smoother images

where:
  --trainer.default_root_dir DIR the run directory: images/, snapshots/, manifest.jsonl, lightning_logs/
  --trainer.devices N            devices, each inverting its own prompts
  --writer.snapshot_steps LIST   steps at which every image is saved too, e.g. [25, 100]
  --fresh                        delete the run directory's results first and start again
  --ckpt_path last               resume the batch that a killed run cut short
  --print_config                 print the resolved config and exit
"""


def help_request(args: list[str]) -> str | None:
    """``"short"``, ``"full"`` or ``None``: which help the command line asks for (options after ``--`` aside)."""
    args = args[: args.index("--")] if "--" in args else args
    if any(a in FULL for a in args):
        return "full"
    return "short" if any(a in SHORT for a in args) else None


def main(args: list[str] | None = None) -> None:
    """Entry point of ``clip-inversion`` and ``python -m clip_inversion``."""
    args = sys.argv[1:] if args is None else list(args)
    wanted = help_request(args)
    if wanted == "short":
        print(FIT_HELP if "fit" in args else TOP_HELP, end="")
        return
    if wanted == "full":
        args = ["--help" if a in FULL else a for a in args]
    from clip_inversion.cli import main as run_cli  # torch, Lightning and the models: only now

    run_cli(args)
