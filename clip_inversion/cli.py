"""``clip-inversion``: LightningCLI over the inversion module and the prompts, configured by YAML."""

from __future__ import annotations

import errno
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from jsonargparse import ArgumentError
from lightning import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from clip_inversion import strategy  # noqa: F401 (registers the "independent_ddp" strategy)
from clip_inversion.callbacks import InversionWriter, RunCheckpoint
from clip_inversion.data import PromptDataModule
from clip_inversion.errors import UsageError, describe_load_error
from clip_inversion.module import CLIPInversion

# The frozen CLIP stays in eval mode on purpose.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")


class LogConfig(SaveConfigCallback):
    """Saves ``config.yaml`` in the log directory, as usual, and shows it in TensorBoard's text tab."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        experiment = getattr(trainer.logger, "experiment", None)
        if hasattr(experiment, "add_text"):
            text = self.parser.dump(self.config, skip_none=False)
            experiment.add_text("config", f"```yaml\n{text}\n```")


class InversionCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("model.steps", "data.steps")
        # Always on: a run that writes no images is no use (``--writer.snapshot_steps=[...]``).
        parser.add_lightning_class_args(InversionWriter, "writer")
        # A config may also describe a model sweep, which clip-inversion-sweep runs (see sweep.py).
        parser.add_argument("--sweep.models", type=list[str] | None, default=None, help="NAME or NAME@TAG each")
        parser.add_argument("--sweep.root", type=str, default="runs/models", help="parent of the model runs")

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if subcommand and self.config[subcommand].get("ckpt_path") not in (None, "last", "hpc", "best", "registry"):
            check_checkpoint(self.config[subcommand].ckpt_path)  # before Lightning reads its hyperparameters

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        if config.sweep.models:
            raise UsageError("this config describes a model sweep (sweep.models): run it with clip-inversion-sweep")

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, ValueError, RuntimeError) as e:  # accelerator, devices, strategy
            raise UsageError(f"{e} (--trainer.accelerator, --trainer.devices, --trainer.strategy)") from e
        for callback in trainer.callbacks:  # before --ckpt_path=last looks for it
            if isinstance(callback, RunCheckpoint) and callback.dirpath is None:
                callback.dirpath = str(Path(trainer.default_root_dir) / "checkpoints")
        return trainer


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
    return InversionCLI(
        CLIPInversion,
        PromptDataModule,
        args=args,
        run=fit,
        auto_configure_optimizers=False,
        save_config_callback=LogConfig,
        save_config_kwargs={"overwrite": True},
        parser_kwargs={"exit_on_error": False, "fit": {"exit_on_error": False}},
        trainer_defaults={
            "default_root_dir": "runs/clip-inversion",
            "max_epochs": -1,  # the data module sets it to the number of prompt batches
            "use_distributed_sampler": False,
            "num_sanity_val_steps": 0,
            "enable_model_summary": False,
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
        _fail(program, f"{e} (clip-inversion fit --help lists the options)", e)
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
