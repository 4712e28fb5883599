"""``clip-inversion``: LightningCLI over the inversion module and the prompts, configured by YAML.

Only ``fit`` is offered. Prompts given on the command line are the run's prompts: ``--data.prompts`` or
``--data.prompts_file`` there replaces the prompts of the configs (both there: both are inverted). A run
directory is continued only with the settings it was made with (``run.json``, see rundir.py).
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from jsonargparse import ActionYesNo, ArgumentError
from lightning import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.accelerators import CPUAccelerator
from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from clip_inversion import strategy, usage  # noqa: F401 (strategy registers the "independent_ddp" strategy)
from clip_inversion.callbacks import InversionWriter, LogProgress, RunCheckpoint
from clip_inversion.data import PromptDataModule
from clip_inversion.errors import UsageError, describe_load_error
from clip_inversion.module import CLIPInversion
from clip_inversion.precision import resolve_precision
from clip_inversion.rundir import claim, finished, kept_as_found, read_records, record_finished
from clip_inversion.usage import DEFAULT_RUN_DIR, DESCRIPTION, FIT_DESCRIPTION, nothing_left, option_values


class LogConfig(SaveConfigCallback):
    """Saves ``config.yaml`` in the log directory, as usual, shows it in TensorBoard's text tab, and at the end
    puts the prompts, data and recipe settings beside the run's scores in the HParams tab: ``hp/cosine``, the
    mean final cosine of every prompt in the run directory under the inverted model, and any callback's final
    ``scores`` (``hp/judge_cosine`` and ``hp/judge_accuracy``, this session's prompts, when ``JudgeScores`` runs)."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            text = self.parser.dump(self.config, skip_none=False)
            experiment.add_text("config", f"```yaml\n{text}\n```")

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        cosines = [r["cosine"] for r in read_records(trainer.default_root_dir) if r["cosine"] is not None]
        if trainer.logger is None or not cosines:
            return
        config = json.loads(self.parser.dump(self.config, format="json", skip_none=False))
        params = {f"data.{k}": v for k, v in config["data"].items()} | image_settings(config)
        params |= {f"trainer.{k}": config["trainer"][k] for k in ("devices", "num_nodes", "max_steps")}
        metrics = {"hp/cosine": sum(cosines) / len(cosines)}
        for callback in trainer.callbacks:  # a callback's final scores, as JudgeScores keeps them
            scores = getattr(callback, "scores", None) or {}
            metrics |= {f"hp/{name.replace('/', '_')}": value for name, value in scores.items()}
        trainer.logger.log_hyperparams(params, metrics)


class InversionCLI(LightningCLI):
    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Only ``fit``: validating, testing or predicting an inversion means nothing."""
        return {"fit": LightningCLI.subcommands()["fit"]}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.steps", "data.steps")
        # Always on: a run that writes no images is no use (``--writer.snapshot_steps=[...]``).
        parser.add_lightning_class_args(InversionWriter, "writer")
        # A config may also describe a model sweep, which clip-inversion-sweep runs (see sweep.py).
        parser.add_argument("--sweep.models", type=list[str] | None, default=None, help="NAME or NAME@TAG each")
        parser.add_argument("--sweep.root", type=str, default="runs/models", help="parent of the model runs")
        parser.add_argument(
            "--fresh",
            action=ActionYesNo,
            default=False,
            help="delete the run directory's images, snapshots, manifest and checkpoints first, and start again",
        )

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        self.command_line = (sys.argv[1:] if args is None else list(args)) if isinstance(args, list | None) else None
        if self.command_line is not None:
            check_config_files(self.command_line)
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if isinstance(args, list | None):
            data = (self.config[subcommand] if subcommand else self.config).data
            command_line_prompts(data, sys.argv[1:] if args is None else args)
        if subcommand and self.config[subcommand].get("ckpt_path") not in (None, "last", "hpc", "best", "registry"):
            check_checkpoint(self.config[subcommand].ckpt_path)  # before Lightning reads its hyperparameters

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.sweep.models:
            raise UsageError("this config describes a model sweep (sweep.models): run it with clip-inversion-sweep")
        config.trainer.precision, self.precision_why = resolve_precision(
            config.trainer.precision, config.trainer.accelerator
        )

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        given = list(config.trainer.callbacks or [])  # the user's, before Lightning adds its own to the list
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, RuntimeError) as e:  # accelerator, devices, strategy
            raise UsageError(f"{e} (--trainer.accelerator, --trainer.devices, --trainer.strategy)") from e
        for callback in trainer.callbacks:  # before --ckpt_path=last looks for it
            if isinstance(callback, RunCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        if not sys.stderr.isatty() and not any(isinstance(c, ProgressBar) for c in given):  # a log: lines, not a bar
            trainer.callbacks = [LogProgress() if isinstance(c, TQDMProgressBar) else c for c in trainer.callbacks]
        accelerator = self.config[self.subcommand].trainer.accelerator if self.subcommand else None
        if accelerator == "auto" and isinstance(trainer.accelerator, CPUAccelerator) and trainer.num_devices > 1:
            n = trainer.num_devices
            say(f"warning: no GPU found (--trainer.accelerator=auto): --trainer.devices={n} runs {n} CPU processes")
        return trainer

    def fit(self, model: LightningModule, datamodule: LightningDataModule, **kwargs: Any) -> None:
        """Invert the prompts; a run that fails before its first step leaves the run directory as it found it."""
        started = lambda: self.trainer.global_step > 0  # noqa: E731 (a resumed run counts as started)
        with kept_as_found(self.trainer.default_root_dir, started, enabled=rank_zero_only.rank == 0):
            self.invert(model, datamodule, **kwargs)

    def invert(self, model: LightningModule, datamodule: LightningDataModule, **kwargs: Any) -> None:
        """Claim the run directory for these settings, say what is left to do, and invert it."""
        config = self.config[self.subcommand]
        run_dir = Path(self.trainer.default_root_dir)
        if isinstance(self.trainer.accelerator, CPUAccelerator) and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(idle_cores(since=usage.STARTED))
        settings = image_settings(json.loads(self.parser.dump(self.config, format="json", skip_none=False))["fit"])
        first = rank_zero_only.rank == 0  # the other ranks check, and leave writing and deleting to the first
        if first or not config.fresh:
            claim(run_dir, settings, fresh=config.fresh and first, write=first)
        prompts = {(p.id, p.text) for p in datamodule.all_prompts()}
        done = len(prompts & finished(run_dir))
        if done == len(prompts):
            say(nothing_left(done, run_dir))
            self.record_finished(done)
            return
        if done:
            say(f"Resuming: {done} of {len(prompts)} prompts already finished in {run_dir}")
        say(where_it_runs(self.trainer, self.precision_why))
        self.trainer.fit(model, datamodule=datamodule, **kwargs)
        done = len(prompts & finished(run_dir))
        rest = "" if done == len(prompts) else "; rerun the same command to finish the others"
        say(f"{done} of {len(prompts)} prompts finished in {run_dir}{rest}")
        if done == len(prompts):
            self.record_finished(done)

    def record_finished(self, prompts: int) -> None:
        """Let a rerun of this command line answer from ``finished.json`` (see ``usage.answer_finished``)."""
        if rank_zero_only.rank == 0 and self.command_line is not None:
            files = [self.config[self.subcommand].data.prompts_file or ""]
            record_finished(self.trainer.default_root_dir, self.command_line, files, prompts)


def where_it_runs(trainer: Trainer, precision_why: str = "") -> str:
    """One line for the start of a run: the device, processes and nodes, precision (and why) and run directory."""
    device = trainer.strategy.root_device
    name = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else device.type
    processes = f"{trainer.world_size} process{'es' if trainer.world_size > 1 else ''}"
    nodes = f"{trainer.num_nodes} node{'s' if trainer.num_nodes > 1 else ''}"
    why = f" ({precision_why})" if precision_why else ""
    return (
        f"running on {name}, {processes} on {nodes}, precision {trainer.precision}{why}, "
        f"run directory {trainer.default_root_dir}"
    )


def idle_cores(
    read_stat: Callable[[], str] | None = None, window: float = 0.3, since: tuple[float, float, str] | None = None
) -> int:
    """The CPU threads a run uses unless ``OMP_NUM_THREADS`` says otherwise: the cores this process may use minus
    those other processes keep busy now, at least one. Torch's default, a thread a core, oversubscribes a busy
    machine: on 2 shared cores the quickstart took 166 s instead of 36 s with one thread.

    Busy cores are measured from ``/proc/stat``: since ``since`` (a ``usage.cpu_reading()`` taken as the imports
    began, at least ``window`` seconds and at most a minute ago), less this process's own CPU time, or else over
    ``window`` seconds while this process waits. A run that just ended (whose load the 1-minute load average still
    holds) counts as idle. Where ``/proc/stat`` cannot be read, the 1-minute load average stands in.

    Args:
        read_stat: returns the text of ``/proc/stat`` (a stand-in for tests).
        window: the shortest window, in seconds.
        since: ``(wall clock, this process's CPU seconds, /proc/stat)`` at the window's start.
    """
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    try:
        read_stat = read_stat or (lambda: Path("/proc/stat").read_text())
        own = 0.0  # cores this process kept busy in the window
        if since is not None and since[2] and window <= time.monotonic() - since[0] <= 60:
            own = (time.process_time() - since[1]) / (time.monotonic() - since[0])
        else:
            since = (0.0, 0.0, read_stat())
            time.sleep(window)
        before, after = cpu_times(since[2]), cpu_times(read_stat())
        busy = sum(
            (after[c][0] - before[c][0]) / max(1, after[c][1] - before[c][1])
            for c in cores
            if c in before and c in after
        )
        busy = max(0.0, busy - own)
    except (OSError, ValueError):
        busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    return max(1, min(len(cores), round(len(cores) - busy)))


def cpu_times(stat: str) -> dict[int, tuple[int, int]]:
    """``{core: (busy ticks, all ticks)}`` from the text of ``/proc/stat`` (idle and iowait are not busy)."""
    times = {}
    for line in stat.splitlines():
        name, *fields = line.split() or [""]
        if name.startswith("cpu") and name[3:].isdigit():
            ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
            times[int(name[3:])] = (sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    return times


def command_line_prompts(data: Any, args: list[str]) -> None:
    """Make the prompts given on the command line the run's: ``--data.prompts`` or ``--data.prompts_file``
    there drops the other, as the configs set it, unless both are there (``--data.prompts+=...`` appends)."""
    options = ("--data.prompts", "--data.prompts_file")
    inline, from_file = (any(a == o or a.startswith(f"{o}=") for a in args) for o in options)
    if inline and not from_file:
        data.prompts_file = None
    if from_file and not inline:
        data.prompts = None


def image_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings that shape what a run writes, ``{dotted option: value}``, from a dumped ``fit`` config: every
    model option but the speed-only ``channels_last`` and ``compile`` and the weights' ``cache_dir``, every
    writer option (normalisation, snapshots, the NSFW screen), the resolution schedule, the precision and the
    data seed."""
    settings: dict[str, Any] = {}
    _flatten("model", {k: v for k, v in config["model"].items() if k not in ("channels_last", "compile")}, settings)
    _flatten("writer", config["writer"], settings)
    settings.pop("model.clip.cache_dir", None)
    callbacks = config["trainer"].get("callbacks") or []
    schedules = [c.get("init_args", {}).get("milestones") for c in callbacks if "ResolutionSchedule" in c["class_path"]]
    settings["ResolutionSchedule.milestones"] = schedules
    settings["trainer.precision"] = config["trainer"].get("precision")
    settings["data.seed"] = config["data"].get("seed")
    return settings


def _flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}", item, into)
    else:
        into[prefix] = value


def say(message: str) -> None:
    """Tell the user how the run stands: one line on standard error, from the first process only."""
    if rank_zero_only.rank == 0:
        print(f"clip-inversion: {message}", file=sys.stderr, flush=True)


def check_config_files(args: list[str]) -> None:
    """Refuse a ``--config`` file that is not valid YAML, naming the file and the line.

    Raises:
        UsageError: ``FILE:LINE: not valid YAML: <the problem>``.
    """
    for path in option_values(args, "-c", "--config"):
        try:
            yaml.compose(Path(path).read_text(encoding="utf-8"))  # the syntax only: tags are jsonargparse's to refuse
        except (OSError, UnicodeDecodeError):
            continue  # jsonargparse says the file is missing or unreadable
        except yaml.MarkedYAMLError as e:
            line = f":{e.problem_mark.line + 1}" if e.problem_mark else ""
            raise UsageError(f"{path}{line}: not valid YAML: {e.problem} (--config)") from e


def check_checkpoint(path: str) -> None:
    """Refuse a ``--ckpt_path`` that is missing, unreadable, would run code, or holds no inversion.

    Raises:
        UsageError: the message names the file and what is wrong with it.
    """
    if not Path(path).is_file():
        raise UsageError(f"--ckpt_path={path}: no such file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a damaged or malicious file
        raise UsageError(f"--ckpt_path={path}: {describe_load_error(e)}") from e
    if not isinstance(checkpoint, dict) or not any(
        k.startswith("inverter.image.") for k in checkpoint.get("state_dict", {})
    ):
        raise UsageError(f"--ckpt_path={path}: not a clip-inversion checkpoint (no image in its state_dict)")


def run(args: list[str] | None = None, fit: bool = True) -> InversionCLI:
    """Run the CLI and return it, trainer and model included (``args`` as on the command line); with
    ``fit=False``, only parse and instantiate (a leading ``"fit"`` is dropped). Raises on bad input (see
    :func:`exit_on_error`)."""
    if not fit and args and args[0] == "fit":
        args = args[1:]
    for name in ("lightning.pytorch", "lightning.fabric"):  # the banner, tips and "Seed set": warnings only
        logging.getLogger(name).setLevel(logging.WARNING)
    with warnings.catch_warnings():
        # Lightning's, not the user's: its own deprecated torch call, and a notice meant for scripts that pass
        # both sys.argv and args (the sweep and the tests pass args on purpose).
        warnings.filterwarnings("ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning)
        warnings.filterwarnings("ignore", r".*args parameter is intended to run from within Python")
        # Not news here: the frozen CLIP stays in eval mode on purpose, every batch's last step is logged, and
        # images and augmentations are seeded by data.seed, whatever seed_everything says.
        warnings.filterwarnings("ignore", r"Found \d+ module\(s\) in eval mode")
        warnings.filterwarnings("ignore", r"No seed found, seed set to")
        warnings.filterwarnings("ignore", r"The number of training batches .* is smaller than the logging interval")
        # --ckpt_path=last resumes mid-batch by design: the data module plans the same batches again.
        warnings.filterwarnings("ignore", r"You're resuming from a checkpoint that ended before the epoch ended")
        return InversionCLI(
            CLIPInversion,
            PromptDataModule,
            args=args,
            run=fit,
            auto_configure_optimizers=False,
            save_config_callback=LogConfig,
            save_config_kwargs={"overwrite": True},
            parser_kwargs={
                "prog": "clip-inversion",
                "description": DESCRIPTION,
                "exit_on_error": False,
                "fit": {"description": FIT_DESCRIPTION, "exit_on_error": False},
            },
            trainer_defaults={
                "default_root_dir": DEFAULT_RUN_DIR,
                "max_epochs": -1,  # the data module sets it to the number of prompt batches
                "use_distributed_sampler": False,
                "num_sanity_val_steps": 0,
                "enable_model_summary": False,
                "enable_autolog_hparams": False,  # LogConfig logs them at the end, with the run's scores
            },
        )


@contextmanager
def exit_on_error(program: str = "clip-inversion") -> Iterator[None]:
    """For entry points only: input and settings errors, and a disk that cannot be written, print one line and
    exit with status 2 (``CLIP_INVERSION_DEBUG=1`` shows the traceback). Library code raises instead."""
    try:
        yield
    except (UsageError, MisconfigurationException) as e:
        _fail(program, str(e), e)
    except ArgumentError as e:  # jsonargparse: an unknown option, a value of the wrong type, a missing config
        _fail(program, f"{e} (clip-inversion fit --help=full lists every option)", e)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM, errno.ENOTDIR):
            raise
        _fail(
            program,
            f"cannot write {e.filename or 'the run directory'}: {e.strerror}. Free space or fix permissions (or "
            "choose --trainer.default_root_dir), then rerun the same command: finished prompts are kept",
            e,
        )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``clip-inversion`` and ``python -m clip_inversion``; everything finished before an error
    stays on disk."""
    with exit_on_error():
        run(args)


def _fail(program: str, message: str, error: BaseException) -> None:
    if os.environ.get("CLIP_INVERSION_DEBUG"):
        raise error
    print(f"{program}: error: {' '.join(message.split())}", file=sys.stderr)
    sys.exit(2)
