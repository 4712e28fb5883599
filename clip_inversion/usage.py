"""The console scripts' entry points and their help, which answers at once.

``--help`` prints a command's options without importing torch, Lightning or a model. For ``clip-inversion``
(and ``clip-inversion-train-toy``) it shows the options a user changes; ``--help=full`` (or ``--help-all``)
prints every option with its default from the LightningCLI parser (:mod:`clip_inversion.cli`), which everything
else goes to. The other commands' argparse parsers live here, so their ``--help`` is their whole parser's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

DESCRIPTION = "Invert a frozen CLIP model: optimise an image for each prompt until the model sees the prompt in it."
FIT_DESCRIPTION = "Invert prompts into images in a run directory (images, snapshots, manifest.jsonl)."
SHORT, FULL = ("-h", "--help"), ("--help=full", "--help-all")
DEFAULT_RUN_DIR = "runs/clip-inversion"  # --trainer.default_root_dir when neither a config nor the command sets it

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


def cpu_reading() -> tuple[float, float, str]:
    """``(wall clock, this process's CPU seconds, the text of /proc/stat or "")`` now: the start of a window over
    which ``cli.idle_cores`` measures what other processes keep busy."""
    try:
        stat = Path("/proc/stat").read_text()
    except OSError:
        stat = ""
    return time.monotonic(), time.process_time(), stat


STARTED: tuple[float, float, str] | None = None  # cpu_reading() as the heavy imports begin


def hand_over(target: str, args: list[str]) -> None:
    """Run ``target`` (``"module:function"``) on ``args``, importing it (torch, Lightning, the models) only now."""
    global STARTED
    STARTED = cpu_reading()
    module, _, function = target.partition(":")
    getattr(import_module(module), function)(args)


def nothing_left(done: int, run_dir: str | Path) -> str:
    """What a command whose prompts are all finished says."""
    return f"Nothing left to do: {done} of {done} prompts finished in {run_dir}"


def option_values(args: list[str], *options: str) -> list[str]:
    """Every value the command line gives one of ``options``, in order (``--option VALUE`` or ``--option=VALUE``)."""
    values = []
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in options and (eq or i + 1 < len(args)):
            values.append(value if eq else args[i + 1])
    return values


def named_run_dir(args: list[str]) -> str:
    """The run directory a ``fit`` command line names: its last ``--trainer.default_root_dir``, else that of the
    last ``--config`` that sets one, else the default, normalised as Lightning does. A guess from the words alone
    (no config is resolved): :func:`answer_finished` trusts it only where the directory's ``finished.json`` names
    this command line."""
    import yaml

    found = DEFAULT_RUN_DIR
    for path in option_values(args, "-c", "--config"):
        try:
            trainer = (yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}).get("trainer") or {}
            found = trainer.get("default_root_dir") or found
        except (OSError, UnicodeDecodeError, yaml.YAMLError, AttributeError):
            continue
    found = (option_values(args, "--trainer.default_root_dir") or [found])[-1]
    return os.path.normpath(os.path.expanduser(str(found)))


def answer_finished(args: list[str]) -> bool:
    """Answer a rerun of a ``fit`` command line that left nothing to do, without importing torch: True when
    answered, False when the command must run (anything it depends on changed, or it never finished)."""
    from clip_inversion.rundir import finished_before

    if not args or args[0] != "fit" or any(a.startswith(("--fresh", "--print_config")) for a in args):
        return False
    run_dir = named_run_dir(args)
    done = finished_before(run_dir, args)
    if done is None:
        return False
    rank = next(
        (os.environ[k] for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK") if k in os.environ), "0"
    )
    if rank == "0":  # as Lightning's rank_zero_only decides
        print(f"clip-inversion: {nothing_left(done, run_dir)}", file=sys.stderr, flush=True)
    return True


def lightning_entry(
    prog: str, short: Callable[[list[str]], str], target: str, answer: Callable[[list[str]], bool] | None = None
) -> Callable[[list[str] | None], None]:
    """The entry point of ``prog``, a LightningCLI command whose ``--help`` is ``short(args)`` and whose
    ``--help=full`` is the parser's; a command line that ``answer(args)`` answers goes no further, everything
    else goes to ``target``."""

    def entry(args: list[str] | None = None) -> None:
        args = sys.argv[1:] if args is None else list(args)
        wanted = help_request(args)
        if wanted == "short":
            print(short(args), end="")
            return
        if wanted == "full":
            args = ["--help" if a in FULL else a for a in args]
        elif answer is not None and answer(args):
            return
        hand_over(target, args)

    entry.__doc__ = f"Entry point of ``{prog}``."
    return entry


main = lightning_entry(
    "clip-inversion", lambda args: FIT_HELP if "fit" in args else TOP_HELP, "clip_inversion.cli:main", answer_finished
)

TRAIN_TOY_HELP = """usage: clip-inversion-train-toy fit [-c CONFIG ...] [--OPTION=VALUE ...]
       clip-inversion-train-toy --world-seed K [K ...] --cache DIR

Train a small CLIP on a synthetic shape world and ship it as a bundled model (docs/toy-models.md).

  clip-inversion-train-toy fit --config configs/toy/subject.yaml   writes clip_inversion/toyworld/models/toy-subject
  clip-inversion-train-toy fit --config configs/toy/judge.yaml     writes clip_inversion/toyworld/models/toy-judge
  clip-inversion-train-toy --world-seed 3 --cache runs/worlds      world 3 of the family: DIR/world-3/{subject,judge}

options:
  -c, --config CONFIG   a YAML config of configs/toy/; repeat to compose (last wins)
  --world-seed K        train world K of the family of worlds (its subject and judge), or read it from the cache
  --cache DIR           where trained family worlds are kept (with --world-seed)
  -h, --help            show this help; --help=full shows every option with its default
"""

_train_toy_fit = lightning_entry(
    "clip-inversion-train-toy", lambda args: TRAIN_TOY_HELP, "clip_inversion.toyworld.train:main"
)


def family_parser() -> argparse.ArgumentParser:
    """``clip-inversion-train-toy --world-seed``'s options (a family world, not a config)."""
    parser = argparse.ArgumentParser(
        prog="clip-inversion-train-toy", description="Train the subject and judge of family worlds, once."
    )
    parser.add_argument("--world-seed", type=int, nargs="+", required=True, help="the worlds' seeds")
    parser.add_argument("--cache", required=True, help="directory of trained worlds (DIR/world-K/)")
    return parser


def train_toy(args: list[str] | None = None) -> None:
    """Entry point of ``clip-inversion-train-toy``: ``fit`` (a LightningCLI) or ``--world-seed K --cache DIR``."""
    args = sys.argv[1:] if args is None else list(args)
    if any(a == "--world-seed" or a.startswith("--world-seed=") for a in args) and not help_request(args):
        hand_over("clip_inversion.toyworld.cache:main", args)
    else:
        _train_toy_fit(args)


def sweep_parser() -> argparse.ArgumentParser:
    """``clip-inversion-sweep``'s own options; every other option goes on to ``clip-inversion fit``."""
    parser = argparse.ArgumentParser(
        prog="clip-inversion-sweep",
        description="Invert the same prompts with each model of a sweep; other options go to clip-inversion fit.",
    )
    parser.add_argument("--config", action="append", default=[], help="YAML configs, as for clip-inversion fit")
    parser.add_argument("--sweep.models", dest="models", nargs="+", help="NAME or NAME@TAG_OR_FILE, one a model")
    parser.add_argument("--sweep.root", dest="root", help="parent of the model run directories")
    return parser


def experiment_parser() -> argparse.ArgumentParser:
    """``clip-inversion-experiment``'s options."""
    parser = argparse.ArgumentParser(
        prog="clip-inversion-experiment", description="Run an experiment: invert, score with a judge, write a report."
    )
    parser.add_argument("--config", required=True, help="experiment YAML (configs/experiments/*.yaml)")
    parser.add_argument("--root", help="output directory (overrides the file's root)")
    parser.add_argument("--seeds", type=int, help="seeds per prompt (overrides the file's seeds)")
    parser.add_argument("args", nargs="*", help="more clip-inversion fit options, after --")
    return parser


def evaluate_parser() -> argparse.ArgumentParser:
    """``clip-inversion-evaluate``'s options."""
    parser = argparse.ArgumentParser(
        prog="clip-inversion-evaluate", description="Compare inversion runs: judge CLIPSIM, accuracy, FID, KID."
    )
    parser.add_argument("runs", nargs="+", help="run directories (each with manifest.jsonl)")
    parser.add_argument("--config", help="YAML file whose keys are these options (e.g. configs/eval/coco.yaml)")
    parser.add_argument("--real", help="folder of real images of the runs' captions, with manifest.jsonl")
    parser.add_argument("--judge", help="judge model name (default: the bundled toy-judge)")
    parser.add_argument("--pretrained", help="the judge's pretrained tag or checkpoint file")
    parser.add_argument("--features", help="FID/KID features: judge (default) or inception")
    parser.add_argument("--inception-weights", help="InceptionV3 FID weights file (default: torch hub's checkpoints)")
    parser.add_argument("--candidates", help="prompts file to classify among (default: each run's prompts)")
    parser.add_argument("--expected-images", type=int, help="the protocol's images a run (a row that differs says so)")
    parser.add_argument("--bootstrap", type=int, help="bootstrap resamples over prompts (default 100; 0: none)")
    parser.add_argument("--kid-subsets", type=int, help="KID subsets (default 50)")
    parser.add_argument("--seed", type=int, help="seed of the bootstrap and KID subsets (default 0)")
    parser.add_argument("--batch-size", type=int, help="images a forward pass (default 64)")
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--out", help="report folder (default: the first run's report/)")
    return parser


def report_parser() -> argparse.ArgumentParser:
    """``clip-inversion-report``'s options."""
    parser = argparse.ArgumentParser(
        prog="clip-inversion-report", description="Write RUN/report/index.html: a run's images, filterable."
    )
    parser.add_argument("run_dir", metavar="RUN", help="a run directory (holds manifest.jsonl)")
    return parser


def argparse_entry(parser: Callable[[], argparse.ArgumentParser], target: str) -> Callable[[list[str] | None], None]:
    """A command that answers ``-h``/``--help`` from ``parser()`` alone and hands everything else to
    ``target``."""

    def entry(args: list[str] | None = None) -> None:
        args = sys.argv[1:] if args is None else list(args)
        if help_request(args):
            parser().print_help()
            return
        hand_over(target, args)

    entry.__doc__ = f"Entry point of ``{parser().prog}``."
    return entry


sweep = argparse_entry(sweep_parser, "clip_inversion.sweep:main")
experiment = argparse_entry(experiment_parser, "clip_inversion.studies.experiment:main")
evaluate = argparse_entry(evaluate_parser, "clip_inversion.studies.evaluate:main")
report = argparse_entry(report_parser, "clip_inversion.gallery:main")
