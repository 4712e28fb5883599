"""Invert prompts from Python (scripts, notebooks) through exactly the CLI's code path."""

from __future__ import annotations

import json
from pathlib import Path

from clip_inversion.cli import run
from clip_inversion.rundir import Inversion, read_manifest


def invert(
    prompts: list[str], config: str | Path | None = None, run_dir: str | Path = "runs/api", args: list[str] = ()
) -> list[Inversion]:
    """Invert ``prompts`` and return their images and manifest records.

    Args:
        prompts: the prompts; they replace any prompts in ``config``.
        config: a YAML config such as ``configs/quickstart.yaml``; ``None`` uses the module defaults.
        run_dir: the run directory (images, manifest, TensorBoard logs).
        args: more command-line arguments, for example ``["--model.steps=50"]``.

    Returns:
        One :class:`Inversion` a prompt of this call, in the order given.

    Raises:
        UsageError: bad input or settings, or ``run_dir`` holds results made with other settings (give another
            ``run_dir``, or ``args=["--fresh"]`` to delete them and start again).
    """
    cli_args = ["fit"] + (["--config", str(config)] if config else [])
    cli_args += [f"--data.prompts={json.dumps(prompts)}", "--data.prompts_file=null"]
    cli_args += [f"--trainer.default_root_dir={run_dir}", *args]
    run(cli_args)
    wanted = set(prompts)
    done = {inv.prompt: inv for inv in read_manifest(run_dir) if inv.prompt in wanted}
    return [done[p] for p in prompts]
