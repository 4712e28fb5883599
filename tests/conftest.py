import pytest

from clip_inversion.clip import CLIPSpec, FrozenCLIP, load_clip


@pytest.fixture(scope="session")
def subject() -> FrozenCLIP:
    return load_clip(CLIPSpec("toy-subject"))


@pytest.fixture(scope="session")
def judge() -> FrozenCLIP:
    return load_clip(CLIPSpec("toy-judge"))
