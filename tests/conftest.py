import importlib.util
from pathlib import Path
from types import ModuleType

import kornia.augmentation as K
import pytest

from clip_inversion.core.augment import RandomColorShift, RandomResizedCrop
from clip_inversion.core.clip import CLIPSpec, FrozenCLIP, load_clip


@pytest.fixture(scope="session")
def subject() -> FrozenCLIP:
    return load_clip(CLIPSpec("toy-subject"))


@pytest.fixture(scope="session")
def judge() -> FrozenCLIP:
    return load_clip(CLIPSpec("toy-judge"))


@pytest.fixture
def vectorised_augmentations() -> list:
    """One of every augmentation drawn from counter-based randomness (no loop over prompts)."""
    return [
        K.RandomAffine(degrees=30, translate=(0.1, 0.1), scale=(0.7, 1.2), p=0.5, padding_mode="border"),
        RandomResizedCrop(scale=(0.6, 1.0)),
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.02, p=0.5),
        RandomColorShift(shift=0.1, p=0.5),
        K.RandomGaussianNoise(std=0.05, p=0.5),
    ]


@pytest.fixture
def benchmark(monkeypatch):
    """``benchmark("compare_recipes")``: a script of benchmarks/ loaded as a module, benchmarks/ on the path."""
    root = Path(__file__).parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(root))

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
