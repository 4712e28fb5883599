"""``clip-inversion``: LightningCLI over the inversion module and the prompts, configured by YAML."""

from __future__ import annotations

import os
import sys
import warnings

from lightning import LightningModule, Trainer
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from clip_inversion import strategy  # noqa: F401 (registers the "independent_ddp" strategy)
from clip_inversion.callbacks import InversionWriter
from clip_inversion.data import PromptDataModule
from clip_inversion.errors import UsageError
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

    def before_instantiate_classes(self) -> None:
        if self.config[self.subcommand].sweep.models:
            raise UsageError("this config describes a model sweep (sweep.models): run it with clip-inversion-sweep")


def run(args: list[str] | None = None) -> InversionCLI:
    """Run the CLI and return it, trainer and model included (``args`` as on the command line)."""
    return InversionCLI(
        CLIPInversion,
        PromptDataModule,
        args=args,
        auto_configure_optimizers=False,
        save_config_callback=LogConfig,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "default_root_dir": "runs/clip-inversion",
            "max_epochs": -1,  # the data module sets it to the number of prompt batches
            "use_distributed_sampler": False,
            "num_sanity_val_steps": 0,
            "enable_model_summary": False,
        },
    )


def main(args: list[str] | None = None) -> None:
    """Entry point of ``clip-inversion`` and ``python -m clip_inversion``.

    Input and settings errors print one line and exit with status 2; set ``CLIP_INVERSION_DEBUG=1`` for
    the traceback.
    """
    try:
        run(args)
    except (UsageError, MisconfigurationException) as e:
        if os.environ.get("CLIP_INVERSION_DEBUG"):
            raise
        print(f"clip-inversion: error: {' '.join(str(e).split())}", file=sys.stderr)
        sys.exit(2)
