"""The NSFW screen: NudeNet's real detector offline, and what a run does with flagged images.

The real detector is tested on an abstract image it flags as explicit (no image file, nothing explicit drawn):
:func:`drawing`, three soft shaded ellipses on grey, whose parameters were found offline by a seeded
black-box (1+8) evolution strategy over NudeNet's own ``BUTTOCKS_EXPOSED`` score as the screen computes it,
starting from two discs under a wide one, while keeping the score low with the colour channels unswapped
(so a screen that forgets OpenCV's BGR order misses it). Runs through the CLI use a stubbed detector.
"""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision.io import decode_image, read_image

from clip_inversion import nsfw
from clip_inversion.api import read_manifest
from clip_inversion.callbacks import InversionWriter
from clip_inversion.cli import main
from clip_inversion.data import PromptBatch
from clip_inversion.nsfw import NSFWScreen, blur

CONFIGS = Path(__file__).parents[1] / "configs"

# (centre x, centre y, radius x, radius y, red, green, blue, edge shading, angle / pi), in fractions of the side
ELLIPSES = (
    (0.79, 0.27, 0.46, 0.50, 0.86, 0.49, 0.37, 0.15, 0.07),
    (0.35, 0.65, 0.03, 0.35, 0.87, 0.63, 0.79, 0.31, 0.23),
    (0.77, 0.49, 0.19, 0.19, 0.80, 0.81, 0.97, 0.42, 0.02),
)


def drawing(size: int = 224) -> torch.Tensor:
    """``(3, size, size)`` in [0, 1]: :data:`ELLIPSES` on mid-grey, each darker towards its edge."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    image = torch.full((3, size, size), 0.5)
    for cx, cy, rx, ry, red, green, blue, shade, angle in ELLIPSES:
        cos, sin = math.cos(angle * math.pi), math.sin(angle * math.pi)
        u, v = (cos * (xs - cx) + sin * (ys - cy)) / rx, (cos * (ys - cy) - sin * (xs - cx)) / ry
        radius2 = u**2 + v**2
        inside = torch.sigmoid((1 - radius2) * 20)
        colour = torch.tensor([red, green, blue]).view(3, 1, 1) * (1 - shade * radius2.clamp(0, 1))
        image = image * (1 - inside) + colour * inside
    return image.clamp(0, 1)


GREY = torch.full((3, 224, 224), 0.5)


def test_the_real_detector_flags_the_drawing_and_not_grey():
    flagged, clean = NSFWScreen("score").scores(torch.stack([drawing(), GREY]))
    assert flagged["labels"] == ["BUTTOCKS_EXPOSED"] and flagged["flagged"] is True and flagged["score"] >= 0.5
    assert clean == {"score": 0.0, "labels": [], "flagged": False}


def test_the_threshold_and_the_labels_decide():
    (strict,) = NSFWScreen("score", threshold=0.95).scores(drawing()[None])
    assert strict["flagged"] is False and strict["labels"] == [] and 0.5 <= strict["score"] < 0.95
    (faces,) = NSFWScreen("score", labels=("FACE_FEMALE", "FACE_MALE")).scores(drawing()[None])
    assert faces == {"score": 0.0, "labels": [], "flagged": False}


def write_screened(run_dir: Path, images: torch.Tensor, **writer) -> list[dict]:
    """Run :class:`InversionWriter`'s hooks over one finished one-step batch, a prompt an image; the manifest."""
    n = len(images)
    batch = PromptBatch([str(i) for i in range(n)], [f"prompt {i}" for i in range(n)], [0] * n, [[]] * n, [True] * n)
    inverter = SimpleNamespace(
        image=lambda: images, cosine=lambda: torch.zeros(n), guard=SimpleNamespace(stopped_at=torch.full((n,), -1))
    )
    module = SimpleNamespace(
        prompts=batch, hparams=SimpleNamespace(steps=1), inverter=inverter, clip_spec=SimpleNamespace(label="toy"),
        specs=[], weights=[],
    )  # fmt: skip
    trainer = SimpleNamespace(default_root_dir=str(run_dir), is_global_zero=True)
    hooks = InversionWriter(snapshot_steps=[1], **writer)
    hooks.on_train_batch_end(trainer, module, None, batch, 0)
    hooks.on_train_epoch_end(trainer, module)
    return [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]


def test_the_writer_withholds_what_the_real_detector_flags(tmp_path):
    flagged, clean = write_screened(tmp_path, torch.stack([drawing(), GREY]), nsfw="withhold")
    assert flagged["image"] is None and flagged["nsfw"]["action"] == "withheld"
    assert flagged["nsfw"]["labels"] == ["BUTTOCKS_EXPOSED"] and clean["nsfw"]["action"] is None
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.png"))
    assert written == [clean["image"], "snapshots/1_prompt-1/step-00001.png"]
    kept = write_screened(tmp_path / "lenient", drawing()[None], nsfw="withhold", nsfw_threshold=0.95)
    assert kept[0]["nsfw"]["action"] is None and (tmp_path / "lenient" / kept[0]["image"]).is_file()


def test_the_writer_blurs_what_the_real_detector_flags(tmp_path):
    image = drawing()
    flagged, clean = write_screened(tmp_path, torch.stack([image, GREY]), nsfw="blur")
    assert flagged["nsfw"]["action"] == "blurred" and clean["nsfw"]["action"] is None
    written, grey = (read_image(str(tmp_path / r["image"])).float() / 255 for r in (flagged, clean))
    assert (written - blur(image[None])[0]).abs().max() <= 1 / 255 and (written - image).abs().max() > 0.2
    assert (grey - GREY).abs().max() <= 1 / 255


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
