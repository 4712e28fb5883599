"""The NSFW screen: NudeNet's real detector offline, and what a run does with flagged images."""

import json
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision.io import decode_image

from clip_inversion import nsfw
from clip_inversion.api import read_manifest
from clip_inversion.cli import main
from clip_inversion.nsfw import NSFWScreen, blur

CONFIGS = Path(__file__).parents[1] / "configs"


def test_nudenet_scores_every_image_offline():
    screen = NSFWScreen("score")
    images = torch.rand(3, 3, 64, 64)
    results = screen.scores(images)
    assert len(results) == 3
    for r in results:  # noise holds no explicit parts
        assert r["flagged"] is False and r["labels"] == [] and 0 <= r["score"] < 0.5


def test_blur_keeps_colours_and_removes_detail():
    image = torch.zeros(1, 3, 64, 64)
    image[:, 0, ::2] = 1.0  # red stripes one pixel wide
    out = blur(image)
    assert out.shape == image.shape and out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out.mean(dim=(2, 3)), image.mean(dim=(2, 3)), atol=0.02)
    assert out[0, 0].std() < 0.05 * image[0, 0].std()


@pytest.fixture
def flag_second(monkeypatch):
    """NudeNet's detector, answering with one explicit detection for the second prompt of a batch."""

    def detect_batch(self, arrays, batch_size=4):
        return [
            [{"class": "FEMALE_BREAST_EXPOSED", "score": 0.9, "box": [0, 0, 8, 8]}] if i == 1 else []
            for i in range(len(arrays))
        ]

    monkeypatch.setattr("nudenet.NudeDetector.detect_batch", detect_batch)


def run_screened(tmp_path: Path, action: str) -> list[dict]:
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--model.steps=4",
            "--writer.snapshot_steps=[2]",
            f"--writer.nsfw={action}",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--data.prompts=[a red circle, a blue star]",
        ]
    )
    return [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]


def test_withheld_images_stay_off_disk_and_out_of_tensorboard(tmp_path, flag_second):
    clean, flagged = run_screened(tmp_path, "withhold")
    assert clean["nsfw"] == {"score": 0.0, "labels": [], "flagged": False, "action": None}
    assert flagged["nsfw"]["action"] == "withheld" and flagged["nsfw"]["labels"] == ["FEMALE_BREAST_EXPOSED"]
    assert flagged["image"] is None and (tmp_path / clean["image"]).is_file()
    written = {p.name for p in tmp_path.rglob("*.png")}
    assert not any("blue-star" in name for name in written) and any("red-circle" in name for name in written)
    assert [inv.prompt for inv in read_manifest(tmp_path)] == ["a red circle"]
    (events,) = tmp_path.glob("lightning_logs/version_0/events.out.tfevents.*")
    (last, *_) = EventAccumulator(str(events)).Reload().Images("progress/epoch-0000")[::-1]
    grid = decode_image(torch.frombuffer(bytearray(last.encoded_image_string), dtype=torch.uint8))
    tiles = [grid[:, 2:130, 2:130], grid[:, 2:130, 132:260]]  # 128 px labelled tiles, make_grid's 2 px padding
    assert tiles[0].float().std() > 10 and (tiles[1].int() - 128).abs().max() <= 1  # the flagged one is grey
    run_screened(tmp_path, "withhold")  # a rerun keeps the withheld prompt finished: nothing is redone
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 2


def test_blurred_images_are_written_blurred(tmp_path, flag_second):
    clean, flagged = run_screened(tmp_path, "blur")
    assert flagged["nsfw"]["action"] == "blurred" and clean["nsfw"]["action"] is None
    by_prompt = {inv.prompt: inv.image for inv in read_manifest(tmp_path)}
    smoothness = {p: (img[:, :, 1:] - img[:, :, :-1]).abs().mean().item() for p, img in by_prompt.items()}
    assert smoothness["a blue star"] < 0.2 * smoothness["a red circle"]


def test_screen_needs_nudenet_and_says_how_to_get_it(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "nudenet", None)
    with pytest.raises(SystemExit) as exit_info:
        run_screened(tmp_path, "blur")
    assert exit_info.value.code == 2
    assert 'pip install "clip-inversion[nsfw]"' in capsys.readouterr().err
    assert not (tmp_path / "manifest.jsonl").exists()


def test_unknown_labels_are_refused():
    with pytest.raises(nsfw.UsageError, match="unknown NudeNet label"):
        NSFWScreen("score", labels=("NOT_A_LABEL",))
