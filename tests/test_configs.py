"""Every shipped ``clip-inversion fit`` config says how it is run, and resolves to what it claims.

Each config's header holds the command that runs it: alone (``--config configs/x.yaml``) or composed over
the configs it names. The test resolves exactly that command, as a user would, and checks the settings the
config claims, so that a config composed over one that later changed cannot silently inherit its recipe.
"""

import re
import shlex
from pathlib import Path

import kornia.augmentation as K
import pytest
import torch
import yaml

from clip_inversion.callbacks import InversionWriter, ResolutionSchedule
from clip_inversion.cli import run
from clip_inversion.core.augment import RandomColorShift, RandomResizedCrop
from clip_inversion.core.image import PixelImage

ROOT = Path(__file__).parents[1]
FIT_KEYS = {"seed_everything", "trainer", "model", "data", "writer"}  # a fit config holds only these
FIT_CONFIGS = sorted(  # configs/toy/ holds the toy trainer's configs (clip-inversion-train-toy), not inversions'
    p
    for p in (ROOT / "configs").rglob("*.yaml")
    if set(yaml.safe_load(p.read_text())) <= FIT_KEYS and "toy" not in p.relative_to(ROOT / "configs").parts
)
EVERY_AUGMENTATION = [
    K.RandomAffine,
    RandomResizedCrop,
    K.RandomHorizontalFlip,
    K.ColorJitter,
    RandomColorShift,
    K.RandomGaussianNoise,
]


def header_command(path: Path) -> list[str]:
    """The ``--config`` files of the first ``clip-inversion fit`` command in ``path``'s header comment."""
    header = "".join(line[1:].strip() + " " for line in path.read_text().splitlines() if line.startswith("#"))
    match = re.search(r"clip-inversion fit ((?:\\ |[^\\])*?)(?:$|(?<=yaml)\s+(?!--config|\\))", header)
    words = shlex.split(match.group(1).replace("\\", " "))
    configs = [words[i + 1] for i, word in enumerate(words) if word == "--config"]
    assert configs, f"{path}: its header names no --config"
    return configs


def resolve(configs: list[str], tmp_path: Path):
    args = [a for c in configs for a in ("--config", str(ROOT / c))]
    return run(["fit", *args, f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu"], fit=False)


def callback(cli, kind: type):
    (found,) = [c for c in cli.trainer.callbacks if isinstance(c, kind)]
    return found


def test_the_configs_that_are_run_alone_or_composed_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in FIT_CONFIGS}
    assert {"configs/quickstart.yaml", "configs/paper.yaml", "configs/released-64px.yaml", "configs/fast.yaml"} <= names
    assert {"configs/augment/all.yaml", "configs/augment/affine-8.yaml"} <= names


@pytest.mark.parametrize("path", FIT_CONFIGS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_fit_config_names_itself_in_the_command_of_its_header(path, tmp_path):
    configs = header_command(path)
    assert configs[-1] == path.relative_to(ROOT).as_posix(), f"{path}: the header runs {configs}"
    resolve(configs, tmp_path)  # the documented composition parses and builds


def test_released_64px_is_the_released_recipe_whatever_the_quickstart_holds(tmp_path):
    cli = resolve(header_command(ROOT / "configs" / "released-64px.yaml"), tmp_path)
    hp, augment = cli.model.hparams, cli.model.augment
    (affine,) = augment.transforms  # the reference affine alone: none of the quickstart's augmentations
    assert type(affine) is K.RandomAffine and affine.p == 0.5
    assert [float(affine._param_generator.degree_sampler.high)] == [30.0]
    assert augment.copies == 13 and hp.steps == 400 and hp.init_size == 16
    assert (hp.tv, hp.l1, hp.grad_clip, hp.clamp, hp.distance) == (0.005, 0.0, 1.0, "before_step", "l2")
    assert type(cli.model.image_factory([0], 16)) is PixelImage and cli.model.scheduler_factory is None
    optimizer = cli.model.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
    assert type(optimizer) is torch.optim.Adam and optimizer.defaults["lr"] == pytest.approx(0.1)
    assert callback(cli, ResolutionSchedule).milestones == {106: 32, 212: 64}
    assert not callback(cli, InversionWriter).minmax
    assert not hp.fused_warp and cli.trainer.precision == "32-true"


def test_the_quickstart_and_every_augmentation_hold_the_six_augmentations(tmp_path):
    quickstart = resolve(["configs/quickstart.yaml"], tmp_path / "q")
    assert [type(t) for t in quickstart.model.augment.transforms] == EVERY_AUGMENTATION
    assert quickstart.model.augment.copies == 32 and quickstart.model.hparams.tv == pytest.approx(0.087)
    every = resolve(header_command(ROOT / "configs" / "augment" / "all.yaml"), tmp_path / "a")
    assert [type(t) for t in every.model.augment.transforms] == EVERY_AUGMENTATION


def test_affine_8_is_the_reference_affine_alone_at_8_copies(tmp_path):
    cli = resolve(header_command(ROOT / "configs" / "augment" / "affine-8.yaml"), tmp_path)
    (affine,) = cli.model.augment.transforms
    assert type(affine) is K.RandomAffine and cli.model.augment.copies == 8
