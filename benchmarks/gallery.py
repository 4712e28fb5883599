"""``clip-inversion-report`` on a synthetic run: time to write the page, then to rewrite it with every thumbnail
up to date, and (with Chromium and Playwright) the page's load and filter times in headless Chromium.

python benchmarks/gallery.py                                # 10,000 prompts, 64 px images, 2 snapshots each
python benchmarks/gallery.py --prompts 1000 --snapshots 0

The run (manifest records shaped like the writer's, noise images) is made in a temporary folder, untimed. The
report runs as a user runs it, ``python -m clip_inversion.gallery RUN`` in a fresh process; "of which imports" is
``import clip_inversion.gallery`` alone. Load: until the page's ``load`` event (the lazy images in view loaded);
filter: typing two words, through the next frame.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

COLOURS, SHAPES = ("red", "green", "blue", "yellow", "purple"), ("circle", "square", "star", "cross")


def make_run(run_dir: Path, prompts: int, snapshots: int, size: int, steps: int = 200) -> None:
    """A run directory of ``prompts`` noise images with ``snapshots`` snapshots each and their manifest."""
    rng = np.random.default_rng(0)
    records = []
    for i in range(prompts):
        prompt = f"a {COLOURS[i % 5]} {SHAPES[i // 5 % 4]} number {i}"
        stem = f"{i:05d}_" + prompt.replace(" ", "-")
        for path in [f"images/{stem}.png", *(f"snapshots/{stem}/step-{s:05d}.png" for s in range(1, snapshots + 1))]:
            (run_dir / path).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(run_dir / path)
        records.append(
            {
                "id": f"{i:05d}",
                "prompt": prompt,
                "image": f"images/{stem}.png",
                "model": "toy-subject",
                "models": [{"model": "toy-subject", "weight": 1.0, "random_weights": False}],
                "seed": int(rng.integers(2**32)),
                "steps": steps,
                "resolution": size,
                "cosine": round(float(rng.uniform(0.5, 1)), 6),
                "tags": [COLOURS[i % 5], "even" if i % 2 == 0 else "odd"],
                "nonfinite_step": None,
            }
        )
    (run_dir / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")


def seconds(*args: str) -> float:
    """Wall seconds of ``python ARGS`` in a fresh process."""
    start = time.perf_counter()
    subprocess.run([sys.executable, *args], check=True, capture_output=True)
    return time.perf_counter() - start


def browse(index: Path, chromium: str) -> tuple[float, float]:
    """Seconds to the page's ``load`` event, and for one filter keystroke through the next frame."""
    from playwright.sync_api import sync_playwright

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        browser = p.chromium.launch_persistent_context(profile, executable_path=chromium, args=flags)
        page = browser.new_page()
        start = time.perf_counter()
        page.goto(index.as_uri(), wait_until="load")
        load = time.perf_counter() - start
        filter_ms = page.evaluate(
            """async () => {
                const box = document.getElementById("filter"), start = performance.now();
                box.value = "star even"; box.dispatchEvent(new Event("input"));
                await new Promise(r => requestAnimationFrame(() => setTimeout(r)));
                return performance.now() - start;
            }"""
        )
        browser.close()
    return load, filter_ms / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=10_000)
    parser.add_argument("--snapshots", type=int, default=2, help="snapshots a prompt")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp)
        make_run(run_dir, args.prompts, args.snapshots, args.size)
        first, again = (seconds("-m", "clip_inversion.gallery", str(run_dir)) for _ in range(2))
        imports = seconds("-c", "import clip_inversion.gallery")  # the package imports open_clip and torch
        index = run_dir / "report" / "index.html"
        thumbs = sum(1 for _ in (run_dir / "report" / "thumbs").rglob("*.jpg"))
        row = f"| {args.prompts} | {thumbs} | {first:.1f} s | {again:.1f} s | {imports:.1f} s |"
        row += f" {index.stat().st_size / 2**20:.1f} MiB |"
        chromium = shutil.which("chromium")
        if chromium:
            load, keystroke = browse(index, chromium)
            row += f" {load:.2f} s | {keystroke * 1000:.0f} ms |"
        columns = "prompts | thumbnails | first report | again (all up to date) | of which imports | index.html"
        print(f"| {columns} | load | filter |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        print(row)


if __name__ == "__main__":
    main()
