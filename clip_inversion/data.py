"""Prompts -> per-rank batches: read prompt files, give each prompt an id and a seed, plan the sweep.

The sweep is planned over all prompts, the same way on every rank: epoch ``e`` inverts the ``e``-th
group of ``batch_size x world_size`` prompts, rank ``r`` taking the ``r``-th slice of ``batch_size``. Each
epoch presents its batch for ``steps`` consecutive training steps, and ``setup`` sets the trainer's
epoch count to the number of groups. Prompts already in the run's manifest are not written again, and an
epoch whose prompts are all finished is skipped, so rerunning a command resumes its sweep.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lightning import LightningDataModule
from torch.utils.data import DataLoader, Sampler

from clip_inversion.core.targets import parse_target
from clip_inversion.errors import UsageError
from clip_inversion.rundir import finished

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass
class Prompt:
    """One prompt of a sweep."""

    id: str
    text: str
    seed: int
    tags: list[str] = field(default_factory=list)


@dataclass
class PromptBatch:
    """The prompts inverted together on one rank for one epoch (plain lists: safe in checkpoints).

    ``pending`` is False for padding (a rank with no prompt left in the last epoch inverts a copy of one)
    and for prompts already in the manifest; ``skip`` is True when no rank has anything pending.
    """

    ids: list[str]
    prompts: list[str]
    seeds: list[int]
    tags: list[list[str]]
    pending: list[bool]
    skip: bool = False

    def __len__(self) -> int:
        return len(self.ids)


def prompt_seed(base_seed: int, prompt_id: str) -> int:
    """A prompt's own seed, derived from the run's base seed and the prompt's id (stable across runs)."""
    digest = hashlib.sha256(f"{base_seed}:{prompt_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def read_prompts(path: str | Path, base_seed: int = 0, first: int = 0) -> list[Prompt]:
    """Read a prompts file: ``.jsonl``, ``.csv`` or plain text (one prompt a line).

    JSONL lines and CSV rows hold ``prompt`` and optionally ``id``, ``seed`` and ``tags`` (a list in JSONL,
    ``;``-separated in CSV). In text files blank lines and lines starting with ``#`` are skipped. Ids default
    to the prompt's position (counting from ``first``); seeds default to :func:`prompt_seed`.

    Raises:
        UsageError: the file is missing, not UTF-8, malformed or empty; the message names file and line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"prompts file not found: {path} (--data.prompts_file)") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory: give one of its prompts files (--data.prompts_file)") from None
    except OSError as e:
        raise UsageError(f"cannot read the prompts file {path}: {e.strerror} (--data.prompts_file)") from None
    except UnicodeDecodeError as e:
        line = path.read_bytes().count(b"\n", 0, e.start) + 1
        raise UsageError(f"{path}:{line}: not valid UTF-8 (--data.prompts_file)") from None
    if path.suffix == ".jsonl":
        rows = list(_jsonl_rows(path, text))
    elif path.suffix == ".csv":
        rows = list(_csv_rows(path, text))
    else:
        rows = [
            (n, {"prompt": line.strip()})
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
    if not rows:
        raise UsageError(f"{path} holds no prompt (--data.prompts_file)")
    width = max(5, len(str(first + len(rows) - 1)))
    prompts = [_prompt(path, n, row, f"{i:0{width}d}", base_seed) for i, (n, row) in enumerate(rows, first)]
    _check_unique_ids(prompts, str(path))
    return prompts


def _jsonl_rows(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise UsageError(f"{path}:{n}: expected a JSON object with a 'prompt' field")
        yield n, row


def _csv_rows(path: Path, text: str) -> Iterator[tuple[int, dict]]:
    reader = csv.DictReader(text.splitlines())
    if "prompt" not in (reader.fieldnames or []):
        raise UsageError(f"{path}:1: the CSV header needs a 'prompt' column")
    for row in reader:
        if None in row or any(v is None for v in row.values()):
            raise UsageError(f"{path}:{reader.line_num}: expected {len(reader.fieldnames)} columns")
        if row.get("tags") is not None:
            row["tags"] = [t.strip() for t in row["tags"].split(";") if t.strip()]
        yield reader.line_num, {k: v for k, v in row.items() if v != ""}


def _prompt(path: Path, line: int, row: dict, default_id: str, base_seed: int) -> Prompt:
    where = f"{path}:{line}"
    unknown = set(row) - {"prompt", "id", "seed", "tags"}
    if unknown:
        raise UsageError(f"{where}: unknown field(s) {sorted(unknown)}; allowed: prompt, id, seed, tags")
    text = row.get("prompt")
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{where}: empty or missing prompt")
    prompt_id = str(row.get("id", default_id))
    if not SAFE_ID.fullmatch(prompt_id):
        raise UsageError(f"{where}: id {prompt_id!r} must be 1-64 letters, digits, '.', '_' or '-'")
    try:
        seed = int(row["seed"]) if "seed" in row else prompt_seed(base_seed, prompt_id)
    except (TypeError, ValueError):
        raise UsageError(f"{where}: seed {row['seed']!r} is not an integer") from None
    tags = row.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise UsageError(f"{where}: tags must be a list of strings")
    return Prompt(prompt_id, text.strip(), seed, tags)


def _check_unique_ids(prompts: list[Prompt], where: str) -> None:
    seen: set[str] = set()
    for p in prompts:
        if p.id in seen:
            raise UsageError(f"{where}: id {p.id!r} is used twice")
        seen.add(p.id)


def plan(
    prompts: list[Prompt], batch_size: int, world_size: int, rank: int, done: set[tuple[str, str]] = frozenset()
) -> list[PromptBatch]:
    """This rank's batch for every epoch of the sweep (the same number of epochs on every rank)."""
    per_epoch = batch_size * world_size
    batches = []
    for start in range(0, len(prompts), per_epoch):
        group = prompts[start : start + per_epoch]
        mine = group[rank * batch_size : (rank + 1) * batch_size]
        pending = [(p.id, p.text) not in done for p in mine]
        if not mine:  # the last group is short: invert a copy of its first prompt, write nothing
            mine, pending = group[:1], [False]
        batches.append(
            PromptBatch(
                ids=[p.id for p in mine],
                prompts=[p.text for p in mine],
                seeds=[p.seed for p in mine],
                tags=[p.tags for p in mine],
                pending=pending,
                skip=all((p.id, p.text) in done for p in group),
            )
        )
    return batches


class RepeatBatch(Sampler[int]):
    """Yields the current epoch's batch index ``steps`` times (Lightning calls ``set_epoch`` each epoch)."""

    def __init__(self, steps: int) -> None:
        self.steps, self.epoch = steps, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        return iter([self.epoch] * self.steps)

    def __len__(self) -> int:
        return self.steps


class PromptDataModule(LightningDataModule):
    """Prompts given inline or as a file, planned into per-rank batches of ``batch_size``.

    On the command line either option is the run's prompt list: it replaces whatever the configs give for
    both, unless both options are on the command line (then both are inverted, the inline ones first).

    Args:
        prompts: prompts given inline (``--data.prompts='[a red circle, a blue star]'``).
        prompts_file: a ``.txt`` (one prompt a line), ``.jsonl`` or ``.csv`` file (``--data.prompts_file=PATH``);
            ``configs/prompts/`` holds examples.
        batch_size: prompts inverted together on each device.
        seed: base seed; each prompt's seed is derived from it and the prompt's id unless the file gives one.
        steps: optimisation steps per batch (linked to ``model.steps`` by the CLI).
    """

    def __init__(
        self,
        prompts: list[str] | None = None,
        prompts_file: str | None = None,
        batch_size: int = 8,
        seed: int = 0,
        steps: int = 300,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise UsageError(f"--data.batch_size must be at least 1, got {batch_size}")
        self.prompts, self.prompts_file = prompts, prompts_file
        self.batch_size, self.seed, self.steps = batch_size, seed, steps
        self.batches: list[PromptBatch] = []

    def all_prompts(self) -> list[Prompt]:
        """The inline prompts followed by the file's; ids number them in that order unless the file names them."""
        prompts = []
        for i, text in enumerate(self.prompts or []):
            if not text.strip():
                raise UsageError(f"prompt {i} of --data.prompts is empty")
            prompts.append(Prompt(f"{i:05d}", text.strip(), prompt_seed(self.seed, f"{i:05d}")))
        if self.prompts_file:
            prompts += read_prompts(self.prompts_file, self.seed, first=len(prompts))
        if not prompts:
            raise UsageError("no prompts: give --data.prompts or --data.prompts_file")
        _check_unique_ids(prompts, "--data.prompts and --data.prompts_file")
        return prompts

    def setup(self, stage: str) -> None:
        trainer = self.trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer else (1, 0)
        done = finished(trainer.default_root_dir) if trainer else set()
        self.batches = plan(self.all_prompts(), self.batch_size, world_size, rank, done)
        for batch in self.batches:  # every target (weights, files) checked before any model loads
            for spec in batch.prompts:
                parse_target(spec)
        if trainer is not None:
            trainer.fit_loop.max_epochs = len(self.batches)  # one epoch a batch: the sweep ends with the last

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.batches, sampler=RepeatBatch(self.steps), batch_size=None, collate_fn=_identity)


def _identity(batch: PromptBatch) -> PromptBatch:
    return batch
