"""Nothing unsafe loaded or written: malicious checkpoints are refused, file names stay in the run directory."""

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clip_inversion.core.clip import CLIPLoadError, CLIPSpec, load_clip
from clip_inversion.data import SAFE_ID
from clip_inversion.rundir import image_stem


class RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "weights.pt"
    torch.save({"state_dict": RunsCode(str(marker))}, evil)
    with pytest.raises(CLIPLoadError, match="refused"):
        load_clip(CLIPSpec("toy-resnet", pretrained=str(evil)))
    assert not marker.exists()


@settings(max_examples=300, deadline=None)
@given(prompt=st.text(min_size=1, max_size=500), prompt_id=st.from_regex(SAFE_ID, fullmatch=True))
def test_file_names_from_prompts_stay_inside_the_run_directory(tmp_path_factory, prompt, prompt_id):
    images = tmp_path_factory.getbasetemp() / "run" / "images"
    stem = image_stem(prompt_id, prompt)
    path = (images / f"{stem}.png").resolve()
    assert path.parent == images.resolve()  # no '..', no absolute path, no separator survives
    assert "\x00" not in stem and len(f"{stem}.png") <= 255 and stem.isascii()


ids = st.from_regex(SAFE_ID, fullmatch=True)


@settings(max_examples=300)
@given(a=ids, b=ids, prompt_a=st.text(), prompt_b=st.text())
def test_different_ids_never_collide_whatever_the_prompts(a, b, prompt_a, prompt_b):
    if a != b:
        assert image_stem(a, prompt_a) != image_stem(b, prompt_b)


def test_names_that_clean_to_the_same_slug_stay_apart():
    assert image_stem("a", "b c") != image_stem("a-b", "c")  # "a_b-c" and "a-b_c"
