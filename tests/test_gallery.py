"""``clip-inversion-report RUN``: the gallery page of a real run, opened in headless Chromium."""

import json
import os
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy
import pytest
from PIL import Image

from clip_inversion.cli import main as fit
from clip_inversion.gallery import main, write_gallery

CONFIGS = Path(__file__).parents[1] / "configs"
PROMPTS = [
    {"prompt": "a red circle", "tags": ["warm", "round"]},
    {"prompt": "a blue star", "tags": ["cold"]},
    {"prompt": "a green square", "tags": ["cold", "angular"]},
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A quickstart run cut short: 3 prompts with tags, 4 steps, a snapshot at steps 2 and 4 (the last)."""
    run_dir = tmp_path_factory.mktemp("run")
    prompts = run_dir.parent / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(p) + "\n" for p in PROMPTS), encoding="utf-8")
    fit(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--model.steps=4",
            "--model.copies=2",
            "--writer.snapshot_steps=[2, 4]",
            f"--data.prompts_file={prompts}",
            f"--trainer.default_root_dir={run_dir}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
        ]
    )
    return run_dir


@pytest.fixture
def copy(run, tmp_path) -> Path:
    """A copy of the run that a test may change."""
    return Path(shutil.copytree(run, tmp_path / "run"))


@pytest.fixture(scope="module")
def chromium() -> str:
    """The system's Chromium (Playwright drives it; its own browser download is never used)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("no browser: install Chromium (apt-get install chromium) to open the report")
    return path


def test_the_page_shows_every_prompt_and_filters_in_a_browser(chromium, copy, capsys):
    from playwright.sync_api import sync_playwright

    main([str(copy)])
    index = copy / "report" / "index.html"
    assert capsys.readouterr().out.strip() == str(index)
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(profile, executable_path=chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page()
        requests = []
        page.on("request", lambda request: requests.append(request.url))
        page.goto(index.as_uri())
        figures = page.locator("main figure")
        assert figures.locator("figcaption b").all_inner_texts() == [p["prompt"] for p in PROMPTS]
        images = page.locator("main img")
        assert images.count() == 2 * len(PROMPTS)  # the final image and the step-2 snapshot (step 4 is the final)
        for i in range(images.count()):  # lazy images load once scrolled to
            images.nth(i).scroll_into_view_if_needed()
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=10_000)
        sizes = images.evaluate_all("images => images.map(i => [i.naturalWidth, i.getAttribute('loading')])")
        assert sizes == [[128, "lazy"], [64, "lazy"]] * len(PROMPTS)
        assert all(url.startswith("file://") for url in requests)  # offline: nothing fetched from elsewhere

        page.fill("#filter", "blue")
        assert [figures.nth(i).is_visible() for i in range(3)] == [False, True, False]
        assert page.inner_text("#count") == "1 of 3 shown"
        page.fill("#filter", "COLD square")  # a tag and a word of the prompt, in any case
        assert [figures.nth(i).is_visible() for i in range(3)] == [False, False, True]
        page.fill("#filter", "")
        assert all(figures.nth(i).is_visible() for i in range(3))
        browser.close()


def test_thumbnails_are_written_once_and_follow_the_manifest(copy):
    write_gallery(copy)
    thumbs = copy / "report" / "thumbs"
    finals = sorted((thumbs / "images").glob("*.jpg"))
    snapshot_thumbs = sorted((thumbs / "snapshots").glob("*/step-*.jpg"))
    assert len(finals) == len(snapshot_thumbs) == len(PROMPTS)
    assert {Image.open(t).size for t in finals} == {(128, 128)} and Image.open(snapshot_thumbs[0]).size == (64, 64)
    written = {t: t.stat().st_mtime_ns for t in finals}

    image = copy / "images" / finals[1].with_suffix(".png").name
    os.utime(image, ns=(written[finals[1]] + 10**9,) * 2)  # the image changed after its thumbnail
    write_gallery(copy)
    assert {t: t.stat().st_mtime_ns for t in finals if t.stat().st_mtime_ns != written[t]} == {
        finals[1]: finals[1].stat().st_mtime_ns
    }

    lines = (copy / "manifest.jsonl").read_text().splitlines()
    (copy / "manifest.jsonl").write_text(lines[0] + "\n")  # two prompts leave the run: their thumbnails go
    write_gallery(copy)
    assert sorted(p.name for p in thumbs.rglob("*.jpg")) == [finals[0].name, "step-00002.jpg"]


class Figures(HTMLParser):
    """The text of each ``<figure>`` and the ``src`` of its images."""

    def __init__(self) -> None:
        super().__init__()
        self.figures: list[dict] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "figure":
            self.figures.append({"text": "", "src": []})
        elif tag == "img":
            self.figures[-1]["src"].append(dict(attrs)["src"])

    def handle_data(self, data: str) -> None:
        if self.figures:
            self.figures[-1]["text"] += data


def test_every_record_shows_its_fields_and_why_an_image_is_absent(tmp_path):
    (tmp_path / "images").mkdir()
    Image.new("RGB", (300, 150), "red").save(tmp_path / "images" / "wide.png")
    Image.fromarray(numpy.indices((4, 4)).sum(0).astype(numpy.uint8) % 2 * 255).save(tmp_path / "images" / "tiny.png")
    (tmp_path / "images" / "broken.png").write_bytes(b"not a png")
    records = [
        {"id": "0", "prompt": "a wide <b>image</b>", "image": "images/wide.png", "cosine": 0.123456, "judge": 0.5},
        {"id": "1", "prompt": "flagged", "image": None, "nsfw": {"score": 0.9, "labels": ["X"], "flagged": True}},
        {"id": "2", "prompt": "gone", "image": "images/gone.png", "nonfinite_step": None},
        {"id": "3", "prompt": "broken", "image": "images/broken.png", "nonfinite_step": 7},
        {
            "id": "4",
            "prompt": "escapes",
            "image": "../outside.png",
            "models": [{"model": "a"}, {"model": "b", "random_weights": True}],
        },
        {"id": "5", "prompt": "a 4 x 4 checkerboard", "image": "images/tiny.png"},
    ]
    (tmp_path / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records) + '{"cut short')
    parser = Figures()
    parser.feed(write_gallery(tmp_path).read_text(encoding="utf-8"))
    texts = [f["text"] for f in parser.figures]
    assert len(texts) == 6 and "a wide <b>image</b>" in texts[0]  # the prompt as text, not markup
    assert "cosine 0.1235" in texts[0] and "judge 0.5" in texts[0] and "id 0" in texts[0]
    assert parser.figures[0]["src"] == ["thumbs/images/wide.jpg"]
    assert Image.open(tmp_path / "report" / "thumbs" / "images" / "wide.jpg").size == (128, 64)
    assert "withheld" in texts[1] and "nsfw 0.9 X" in texts[1]
    assert "missing" in texts[2] and "nonfinite_step" not in texts[2]  # a null field is left out
    assert "unreadable" in texts[3] and "nonfinite_step 7" in texts[3]
    assert "outside the run" in texts[4] and "ensemble a ×None, b ×None random" in texts[4]
    assert not any(f["src"] for f in parser.figures[1:5])
    tiny = numpy.asarray(Image.open(tmp_path / "report" / "thumbs" / "images" / "tiny.jpg").convert("L"), dtype=int)
    assert tiny.shape == (128, 128) and tiny[16, 31] < 30 and tiny[16, 32] > 225  # scaled up with sharp edges


@pytest.mark.parametrize("make", [lambda d: d / "nowhere", lambda d: d])
def test_a_folder_that_is_not_a_run_is_one_line_and_exit_2(tmp_path, capsys, make):
    with pytest.raises(SystemExit) as exit:
        main([str(make(tmp_path))])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("clip-inversion-report: error: ") and err.count("\n") == 1 and str(tmp_path) in err


def test_the_console_script_writes_the_gallery(tmp_path, capsys):
    from importlib import import_module

    tomllib = pytest.importorskip("tomllib", reason="tomllib needs Python 3.11")
    scripts = tomllib.loads((CONFIGS.parent / "pyproject.toml").read_text())["project"]["scripts"]
    module, name = scripts["clip-inversion-report"].split(":")
    with pytest.raises(SystemExit) as exit_:
        getattr(import_module(module), name)([str(tmp_path / "missing")])
    assert exit_.value.code == 2 and capsys.readouterr().err.startswith("clip-inversion-report: error: ")
