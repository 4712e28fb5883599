"""``clip-inversion-report RUN``: a run's images as one static web page, ``RUN/report/index.html``.

One figure a manifest record: the final image (a thumbnail linking to the full image), its snapshots oldest
first, and what the record holds (id, seed, model, cosine, NSFW screen, tags, any other field). A text box
hides the figures that do not contain every word typed. The page works offline (no external script, font or
style) and stays fast for 10,000 prompts: thumbnails load lazily from ``report/thumbs/``, JPEG files written
once and rewritten only when their image is newer.
"""

from __future__ import annotations

import html
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from PIL import Image

from clip_inversion.errors import UsageError
from clip_inversion.rundir import MANIFEST, RUN_FILE, read_records, snapshots
from clip_inversion.usage import report_parser

FINAL_SIZE, SNAPSHOT_SIZE = 128, 64  # thumbnail sides in pixels

STYLE = """
body { font: 13px/1.35 system-ui, sans-serif; margin: 0 1em 2em; color: #222; }
header { position: sticky; top: 0; background: #fff; padding: .6em 0; border-bottom: 1px solid #ddd; z-index: 1; }
input { font: inherit; width: 24em; padding: .25em .4em; }
main { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 12px; }
figure { margin: 0; width: 264px; content-visibility: auto; contain-intrinsic-size: auto 264px auto 300px; }
figure[hidden] { display: none; }
.final img, .final .none { width: 128px; height: 128px; object-fit: contain; image-rendering: pixelated; }
.final { display: flex; gap: 6px; }
.none { display: flex; align-items: center; justify-content: center; background: #eee; color: #777; }
.snaps { display: flex; flex-wrap: wrap; gap: 2px; align-content: flex-start; }
.snaps img { width: 64px; height: 64px; object-fit: contain; image-rendering: pixelated; display: block; }
.snaps a { position: relative; }
.snaps a::after { content: attr(data-step); position: absolute; left: 0; bottom: 0; font-size: 10px;
  padding: 0 2px; background: rgba(0, 0, 0, .55); color: #fff; }
figcaption b { display: block; margin: .3em 0 .1em; }
.facts { color: #555; font-size: 12px; }
.tag { display: inline-block; background: #e8eefc; border-radius: 3px; padding: 0 .35em; margin: 1px 2px 0 0; }
.warn { background: #fde2e1; }
details { margin-top: .4em; } details pre { white-space: pre-wrap; font-size: 11px; }
"""

# Every word typed must occur in a figure's text (prompt, facts, tags), case-insensitively.
SCRIPT = """
const box = document.getElementById("filter"), count = document.getElementById("count");
const figures = Array.from(document.querySelectorAll("main figure"));
const texts = figures.map(f => f.textContent.toLowerCase());
function filter() {
  const words = box.value.toLowerCase().split(/\\s+/).filter(Boolean);
  let shown = 0;
  figures.forEach((f, i) => { const hit = words.every(w => texts[i].includes(w)); f.hidden = !hit; shown += hit; });
  count.textContent = `${shown} of ${figures.length} shown`;
}
box.addEventListener("input", filter);
filter();
"""


def write_gallery(run_dir: str | Path) -> Path:
    """Write ``RUN/report/index.html`` and its thumbnails; thumbnails already newer than their image are kept,
    and those of images no longer in the manifest are deleted.

    Args:
        run_dir: a run directory: ``manifest.jsonl``, ``images/``, ``snapshots/`` (and ``run.json``).

    Returns:
        The path of ``index.html``.

    Raises:
        UsageError: ``run_dir`` is not a directory or holds no manifest, or the report cannot be written.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UsageError(f"{run_dir} is not a directory: give a run directory (a run's --trainer.default_root_dir)")
    if not (run_dir / MANIFEST).is_file():
        raise UsageError(f"{run_dir} holds no {MANIFEST}: not a run directory, or no prompt has finished yet")
    report = run_dir / "report"
    try:
        thumbs: set[Path] = set()
        figures = [_figure(run_dir, record, thumbs) for record in read_records(run_dir)]
        for old in (report / "thumbs").rglob("*.jpg"):
            if old not in thumbs:
                old.unlink()
        index = report / "index.html"
        with _replacing(index) as tmp:
            Path(tmp).write_text(_page(run_dir, figures), encoding="utf-8")
    except OSError as e:
        raise UsageError(f"cannot write {e.filename or report} ({e.strerror}): free space or fix permissions") from e
    return index


def thumbnail(source: Path, target: Path, size: int) -> str | None:
    """Write ``source`` as a JPEG ``size`` pixels on its long side (nearest-neighbour up, Lanczos down) unless
    ``target`` is already newer than ``source``.

    Returns:
        ``None``, or why there is no thumbnail: ``"missing"`` or ``"unreadable"`` (not an image, or damaged).
    """
    try:
        if target.is_file() and target.stat().st_mtime_ns >= source.stat().st_mtime_ns:
            return None
        with Image.open(source) as image:
            image = image.convert("RGB")
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"
    scale = size / max(image.size)
    resample = Image.Resampling.NEAREST if scale >= 1 else Image.Resampling.LANCZOS
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))), resample)
    with _replacing(target) as tmp:
        image.save(tmp, format="JPEG", quality=90)
    return None


def _figure(run_dir: Path, record: dict, thumbs: set[Path]) -> str:
    """One record's ``<figure>``; adds the thumbnails it uses to ``thumbs``."""

    def img(path: Path, size: int, title: str, label: str = "") -> str:
        """An ``<img>`` of a thumbnail linking to the full image (``label`` drawn over it, kept out of the text
        the filter reads), or a grey box saying why there is none."""
        relative = path.relative_to(run_dir)
        target = run_dir / "report" / "thumbs" / relative.with_suffix(".jpg")
        problem = thumbnail(path, target, size)
        if problem:
            return f'<span class="none" title="{_e(title)}">{problem}</span>'
        thumbs.add(target)
        source, thumb = quote(f"../{relative.as_posix()}"), quote(target.relative_to(run_dir / "report").as_posix())
        link = f'<a href="{source}" data-step="{_e(label)}">' if label else f'<a href="{source}">'
        return f'{link}<img src="{thumb}" loading="lazy" decoding="async" alt="" title="{_e(title)}"></a>'

    image = record.get("image")
    if image is None:
        final = '<span class="none">withheld</span>'
    elif not isinstance(image, str) or Path(image).is_absolute() or ".." in Path(image).parts:
        final = '<span class="none">outside the run</span>'
    else:
        final = img(run_dir / image, FINAL_SIZE, "final")
    snaps = "".join(img(path, SNAPSHOT_SIZE, f"step {step}", str(step)) for step, path in snapshots(run_dir, record))
    tags = "".join(f'<span class="tag">{_e(str(tag))}</span>' for tag in record.get("tags") or [])
    prompt = _e(str(record.get("prompt", "")))
    return (
        f'<figure><div class="final">{final}<div class="snaps">{snaps}</div></div>'
        f'<figcaption><b>{prompt}</b><div class="facts">{_facts(record)}</div>{tags}</figcaption></figure>'
    )


def _facts(record: dict) -> str:
    """The record's fields other than prompt, image and tags, as ``key value`` items (``null`` ones left out)."""
    items = []
    for key, value in record.items():
        if key in ("prompt", "image", "tags") or value is None:
            continue
        if key == "models":  # the ensemble; a single model with its own weights is the ``model`` field already
            if len(value) > 1 or any(m.get("random_weights") for m in value):
                members = (
                    f"{m.get('model')} ×{m.get('weight')}" + (" random" * bool(m.get("random_weights"))) for m in value
                )
                items.append(_e("ensemble " + ", ".join(members)))
        elif key == "nsfw" and isinstance(value, dict):
            words = [f"nsfw {value.get('score')}", *value.get("labels", []), value.get("action") or ""]
            items.append(
                f'<span class="tag{" warn" if value.get("flagged") else ""}">{_e(" ".join(words).strip())}</span>'
            )
        else:
            if isinstance(value, float):
                value = f"{value:.4g}"
            elif not isinstance(value, (str, int)):
                value = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
            text = _e(f"{key} {value}")
            items.append(f'<span class="warn">{text}</span>' if key == "nonfinite_step" else text)
    return " · ".join(items)


def _page(run_dir: Path, figures: list[str]) -> str:
    name = run_dir.resolve().name
    settings = ""
    if (run_dir / RUN_FILE).is_file():
        try:
            values = json.loads((run_dir / RUN_FILE).read_text(encoding="utf-8")).get("settings", {})
            lines = "\n".join(f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in values.items())
            settings = f"<details><summary>settings ({RUN_FILE})</summary><pre>{_e(lines)}</pre></details>"
        except (ValueError, AttributeError):
            settings = f"<details><summary>{RUN_FILE} is not readable JSON</summary></details>"
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(name)}</title><style>{STYLE}</style></head><body>\n"
        f'<header><input id="filter" type="search" placeholder="filter: words of the prompt, tags, fields" '
        f'autofocus> <span id="count">{len(figures)} shown</span> in <b>{_e(name)}</b>{settings}</header>\n'
        "<main>\n" + "\n".join(figures) + f"\n</main>\n<script>{SCRIPT}</script>\n</body></html>\n"
    )


@contextmanager
def _replacing(path: Path) -> Iterator[str]:
    """A temporary file beside ``path`` to write, renamed to ``path`` at the end: a page being read, or a
    report killed while writing, never meets a half-written file (nor one that looks up to date)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def main(args: list[str] | None = None) -> None:
    """Entry point of ``clip-inversion-report``: prints the page written. A bad input ends with one line,
    ``clip-inversion-report: error: ...``, and exit status 2 (``CLIP_INVERSION_DEBUG=1`` shows the traceback)."""
    parser = report_parser()
    ns = parser.parse_args(args)
    try:
        index = write_gallery(ns.run_dir)
    except UsageError as e:
        if os.environ.get("CLIP_INVERSION_DEBUG"):
            raise
        parser.exit(2, f"{parser.prog}: error: {' '.join(str(e).split())}\n")
    print(index)


if __name__ == "__main__":
    main()
