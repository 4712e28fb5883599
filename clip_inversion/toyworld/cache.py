"""Train a family world's subject and judge once and keep them: ``DIR/world-K/{subject,judge}/`` and ``world.json``.

``clip-inversion-train-toy --world-seed K --cache DIR`` trains world ``K``'s two models (``family.draw_world``,
``towers.draw_towers``) with :class:`~clip_inversion.toyworld.train.ToyCLIPTraining` and writes them in open_clip's
``local-dir`` layout, with ``world.json``: the world, each model's tower, training recipe, seconds and zero-shot
accuracy on fresh scenes. A second call with the same seed, directory and recipe answers from ``world.json``.
"""

from __future__ import annotations

import json
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from clip_inversion.core.clip import CLIPSpec, load_clip
from clip_inversion.rundir import write_json
from clip_inversion.toyworld.evaluate import ToyWorld, zero_shot_accuracy
from clip_inversion.toyworld.family import FamilyWorld, draw_world
from clip_inversion.toyworld.towers import Tower, draw_towers

WORLD_JSON = "world.json"
CAPTIONS_TXT = "captions.txt"
ROLES = ("subject", "judge")
EVAL_SCENES, EVAL_SEED = 2000, 10_000  # fresh scenes for each model's accuracy (training draws seeds below 10^9)


@dataclass(frozen=True)
class Recipe:
    """How a family world's model is trained (the same for every tower of a kind and image size).

    Args:
        steps: optimiser steps, each on a fresh batch.
        batch_size: scenes a batch.
        lr: peak AdamW learning rate (``ToyCLIPTraining``: 50 warm-up steps, cosine decay).
        subject_noise: the subject's input-noise std bound (``ToyCLIPTraining.noise_std``); the judge trains without.
        eval_scenes: fresh scenes each model is scored on after training.
        workers: processes rendering batches ahead of the training step (``ShapeWorldData.num_workers``).
    """

    steps: int = 1200
    batch_size: int = 64
    lr: float = 2e-3
    subject_noise: float = 0.15
    eval_scenes: int = EVAL_SCENES
    workers: int = 0


# By tower kind and image size (``recipe_key``). The two models of a world train at once, a core each, so a world
# takes as long as its ViT, which learns shapes slowly: its batches are rendered ahead by a worker, and its steps
# fill about 5 of the 6 minutes a world may take (docs/toy-models.md).
RECIPES: dict[str, Recipe] = {"resnet-32": Recipe(steps=1200), "vit-32": Recipe(steps=5000, workers=1)}


def recipe_key(tower: Tower) -> str:
    """``<kind>-<image size>``: the key of a tower's recipe in ``RECIPES``."""
    return f"{tower.kind}-{tower.image_size}"


def world_dir(cache: str | Path, seed: int) -> Path:
    return Path(cache) / f"world-{seed}"


def _train(world: FamilyWorld, tower: Tower, recipe: Recipe, noise: float, export: Path) -> float:
    """Train one tower on ``world`` and export it to ``export``; returns the wall seconds."""
    from lightning import Trainer, seed_everything

    from clip_inversion.toyworld.train import ShapeWorldData, ToyCLIPTraining

    start = time.perf_counter()
    seed_everything(tower.seed, verbose=False)
    name = tower.register(f"family-{world.world_seed}-{export.name}")
    module = ToyCLIPTraining(name, lr=recipe.lr, export_dir=str(export), noise_std=noise)
    data = ShapeWorldData(
        world, recipe.batch_size, recipe.steps, val_size=1, seed=tower.seed, num_workers=recipe.workers
    )
    trainer = Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=recipe.steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(export.parent / "lightning"),
    )
    trainer.fit(module, datamodule=data)
    return time.perf_counter() - start


def _accuracy(world: FamilyWorld, folder: Path, scenes: int) -> dict[str, dict[str, float]]:
    clip = load_clip(CLIPSpec(f"local-dir:{folder}"))
    return {
        "held_out_template": zero_shot_accuracy(clip, world, scenes, EVAL_SEED),
        "judge_template": zero_shot_accuracy(clip, world, scenes, EVAL_SEED, template=world.templates[0]),
    }


def _train_role(seed: int, tower: Tower, recipe: Recipe, noise: float, export: Path) -> tuple[float, dict]:
    """Train and score world ``seed``'s ``tower`` on one thread (in a process of its own); returns its wall
    seconds and ``_accuracy``."""
    import torch

    torch.set_num_threads(1)
    world = draw_world(seed)
    seconds = _train(world, tower, recipe, noise, export)
    return seconds, _accuracy(world, export, recipe.eval_scenes)


def _train_roles(seed: int, jobs: dict[str, tuple[Tower, Recipe, float, Path]]) -> dict[str, tuple[float, dict]]:
    """Train a world's models at once, a process each: ``jobs[role] = (tower, recipe, noise, export)``; returns
    each role's ``(seconds, accuracy)``."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no threads or torch state inherited
    with ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
        futures = {role: pool.submit(_train_role, seed, *job) for role, job in jobs.items()}
        return {role: future.result() for role, future in futures.items()}


def train_world(seed: int, cache: str | Path, recipes: dict[str, Recipe] | None = None) -> dict:
    """Train world ``seed``'s subject and judge into ``cache`` unless they are there; returns its ``world.json``.

    Args:
        seed: the world's seed (``family.draw_world``).
        cache: the cache directory; the world goes to ``cache/world-<seed>/``.
        recipes: the training recipe of each tower kind and image size (default ``RECIPES``, keyed by
            ``recipe_key``); stored models trained with another recipe are trained again.

    Returns:
        The world's record: ``world`` (its description), ``subject`` and ``judge`` (tower, recipe, ``seconds``,
        ``accuracy`` among the held-out and the judging template's captions on fresh scenes, ``path``), ``seconds``
        (both models with their evaluation) and ``cached``.
    """
    recipes = recipes or RECIPES
    world, towers = draw_world(seed), dict(zip(ROLES, draw_towers(seed, draw_world(seed).image_size)))
    folder = world_dir(cache, seed)
    wanted = {role: asdict(recipes[recipe_key(tower)]) for role, tower in towers.items()}
    stored = read_world(cache, seed)
    if stored and all(stored[role]["recipe"] == wanted[role] for role in ROLES):
        return {**stored, "cached": True}
    start = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CAPTIONS_TXT).write_text("".join(c + "\n" for c in world.captions_of()))
    record = {"world": world.describe()}
    jobs = {}
    for role, tower in towers.items():
        recipe = recipes[recipe_key(tower)]
        jobs[role] = (tower, recipe, recipe.subject_noise if role == "subject" else 0.0, folder / role)
    for role, (seconds, accuracy) in _train_roles(seed, jobs).items():
        record[role] = {
            "tower": towers[role].describe(),
            "recipe": wanted[role],
            "noise_std": jobs[role][2],
            "seconds": round(seconds, 1),
            "accuracy": accuracy,
            "path": role,
        }
    record["seconds"] = round(time.perf_counter() - start, 1)  # both models, their evaluation included
    write_json(folder / WORLD_JSON, record)  # last, whole: its presence says the world is trained
    return {**record, "cached": False}


def read_world(cache: str | Path, seed: int) -> dict | None:
    """World ``seed``'s stored record, or ``None`` when it is not (completely) in ``cache``."""
    folder = world_dir(cache, seed)
    if not (folder / WORLD_JSON).is_file():
        return None
    record = json.loads((folder / WORLD_JSON).read_text())
    if not all((folder / role / "open_clip_model.safetensors").is_file() for role in ROLES):
        return None
    return record


def toy_world(cache: str | Path, seed: int) -> ToyWorld:
    """World ``seed`` with its cached subject and judge as ``local-dir:`` names, for inverting and judging."""
    folder = world_dir(cache, seed).resolve()
    return ToyWorld(draw_world(seed), f"local-dir:{folder / 'subject'}", f"local-dir:{folder / 'judge'}")


def summary(record: dict) -> str:
    """One line: each model's tower, caption accuracy (held-out template) and seconds."""
    parts = []
    for role in ROLES:
        r = record[role]
        acc = r["accuracy"]["held_out_template"]
        parts.append(f"{role} {r['tower']['label']}: {100 * acc['caption']:.1f}% caption, {r['seconds']:.0f} s")
    w = record["world"]
    total = f"; {record['seconds']:.0f} s in all" if "seconds" in record else ""
    return f"world {w['world_seed']} ({w['image_size']} px, {w['style']}): " + "; ".join(parts) + total


def main(args: list[str] | None = None) -> None:
    """``clip-inversion-train-toy --world-seed K --cache DIR``: train (or read) world K and print its summary."""
    from clip_inversion.usage import family_parser

    ns = family_parser().parse_args(args)
    for seed in ns.world_seed:
        record = train_world(seed, ns.cache)
        print(summary(record) + (" (cached)" if record["cached"] else ""), flush=True)
