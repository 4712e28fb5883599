"""Several devices and nodes, each rank inverting its own prompts.

Plain DDP would average the image gradients of different prompts across ranks and broadcast rank 0's
images over everyone else's. :class:`IndependentDDPStrategy` keeps DDP's processes, launcher and process
group (for barriers, broadcasts and gathers) but never wraps the module, so ranks share no gradients.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.strategies import DDPStrategy, StrategyRegistry

from clip_inversion.errors import UsageError

RANK_STATE = ("state_dict", "optimizer_states", "lr_schedulers", "prompts")  # what differs between ranks


class IndependentDDPStrategy(DDPStrategy):
    """DDP's processes without DDP's gradient averaging: ``--trainer.strategy=independent_ddp``."""

    strategy_name = "independent_ddp"

    def configure_ddp(self) -> None:
        """Leave the module unwrapped: no gradient all-reduce, no broadcast of rank 0's parameters."""

    def _configure_launcher(self) -> None:
        """No launcher for a single process: nothing to launch, and notebooks (which refuse one) work."""
        if self.num_nodes * self.num_processes > 1:
            super()._configure_launcher()

    def setup_distributed(self) -> None:
        """Join the process group, unless this is the only process (a laptop, one GPU): then there is none."""
        if self.num_nodes * self.num_processes > 1:
            super().setup_distributed()
        else:
            self.set_world_ranks()


StrategyRegistry.register(
    IndependentDDPStrategy.strategy_name,
    IndependentDDPStrategy,
    description="DDP processes that each invert their own prompts, sharing no gradients",
)


def _distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order, on every rank (``[obj]`` without a process group)."""
    if not _distributed():
        return [obj]
    gathered: list[object] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def gather_to_first(obj: object) -> list[object] | None:
    """Every rank's ``obj`` (tensors moved to the CPU), in rank order, on rank 0 only (``None`` on the others):
    what only rank 0 writes, such as a checkpoint, without every rank holding everyone's copy."""
    obj = move_data_to_device(obj, "cpu")
    if not _distributed():
        return [obj]
    first = torch.distributed.get_rank() == 0
    gathered: list[object] | None = [None] * torch.distributed.get_world_size() if first else None
    torch.distributed.gather_object(obj, gathered, dst=0)
    return gathered


def keep_every_rank(checkpoint: dict[str, Any], prompts: dict | None) -> None:
    """Set ``checkpoint["prompts"]`` and keep every rank's state, as each inverts its own prompts and Lightning
    saves rank 0's alone: ``checkpoint["ranks"]`` lists, in rank order, each rank's images, targets, optimizer
    and scheduler states and prompts (the top-level entries stay rank 0's). Every rank calls this."""
    checkpoint["prompts"] = prompts
    checkpoint["ranks"] = gather_to_first({key: checkpoint.get(key) for key in RANK_STATE})


def take_this_rank(checkpoint: dict[str, Any], trainer: Any) -> dict[str, Any]:
    """Put this rank's own state in place of rank 0's in a loaded checkpoint, and return it.

    Raises:
        UsageError: it was saved by another number of processes (its batches hold other prompts).
    """
    ranks = checkpoint.get("ranks") or [{key: checkpoint.get(key) for key in RANK_STATE}]
    world_size = trainer.world_size
    if len(ranks) != world_size:
        raise UsageError(
            f"--ckpt_path: the checkpoint was saved by {len(ranks)} processes, this run has {world_size}: resume "
            "with the same --trainer.devices and --trainer.num_nodes, or drop --ckpt_path (finished prompts are "
            "kept; unfinished batches start again)"
        )
    checkpoint.update(ranks[trainer.global_rank])  # Lightning restores the optimizers from it after the module
    return checkpoint
