"""The run directory: safe file names, atomic image writes, the ``manifest.jsonl`` of finished prompts and
the ``run.json`` of the settings that made them.

A prompt is finished when its line is in the manifest; its image is written (through a temporary file
and a rename) before that line, so a run killed at any moment leaves no half-written file and no line
without its image. ``run.json`` holds the settings that shape an image; a directory holding results is
only continued with the same settings, so a manifest never mixes images made in different ways.
``finished.json`` names the command line that left nothing to do, so that its rerun answers without
importing torch (:func:`finished_before`). Importing this module imports no torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import unicodedata
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clip_inversion.errors import UsageError

if TYPE_CHECKING:
    from torch import Tensor

MANIFEST = "manifest.jsonl"
RUN_FILE = "run.json"
FINISHED = "finished.json"
RESULTS = (MANIFEST, RUN_FILE, FINISHED, "images", "snapshots", "checkpoints")  # what --fresh deletes


def safe_name(text: str, max_length: int = 60) -> str:
    """A file-name fragment from any text: lower-case ASCII letters, digits and single dashes, never empty."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-") or "prompt"


def image_stem(prompt_id: str, prompt: str) -> str:
    """``<id>_<prompt>``, unique for unique ids: the slug has no ``_``, so the last one splits the two."""
    return f"{prompt_id}_{safe_name(prompt)}"


def check_writable(run_dir: str | Path) -> None:
    """Create the run directory if needed and check that files can be written there.

    Raises:
        UsageError: naming the directory, the reason, and ``--trainer.default_root_dir``.
    """
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as e:
        raise UsageError(
            f"cannot write {run_dir} ({e.strerror}), the run directory: choose another with --trainer.default_root_dir"
        ) from e


def atomic_save_image(image: Tensor, path: Path) -> None:
    """Write a ``(3, H, W)`` image in [0, 1] as PNG through a temporary file and a rename."""
    from torchvision.utils import save_image

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        save_image(image, tmp, format="png")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def append_records(run_dir: Path, records: list[dict]) -> None:
    """Append manifest lines in one write and make them durable before returning."""
    if not records:
        return
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    with open(run_dir / MANIFEST, "a", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def drop_cut_line(run_dir: str | Path) -> None:
    """Remove the manifest's last line if a crash cut it short (no newline), so the next line appended starts
    a line of its own instead of joining it (and both being lost)."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0 or (f.seek(size - 1), f.read(1))[1] == b"\n":
            return
        tail = min(size, 1 << 20)  # a line is far shorter: look back from the end only
        f.seek(size - tail)
        f.truncate(size - tail + f.read(tail).rfind(b"\n") + 1)


def read_records(run_dir: str | Path) -> list[dict]:
    """Every complete line of a run's manifest (a line cut short by a crash is ignored)."""
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def finished(run_dir: str | Path) -> set[tuple[str, str]]:
    """``(id, prompt)`` of every prompt recorded in the manifest whose image exists or was withheld on purpose."""
    run_dir = Path(run_dir)
    return {
        (r["id"], r["prompt"]) for r in read_records(run_dir) if r["image"] is None or (run_dir / r["image"]).is_file()
    }


def snapshots(run_dir: str | Path, record: dict) -> list[tuple[int, Path]]:
    """``(step, path)`` of a manifest record's snapshots, oldest first, without the one of its last step (the
    final image's twin); ``[]`` when it has none."""
    stem = image_stem(record["id"], record["prompt"]) if "id" in record else Path(record.get("image") or "").stem
    found = (path for path in (Path(run_dir) / "snapshots" / stem).glob("step-*.png") if path.stem[5:].isdigit())
    found = sorted((int(path.stem[5:]), path) for path in found)
    return [(step, path) for step, path in found if step != record.get("steps")]


def has_results(run_dir: str | Path) -> bool:
    """Whether a run directory holds finished prompts or a checkpoint to resume from."""
    return bool(read_records(run_dir)) or (Path(run_dir) / "checkpoints" / "last.ckpt").is_file()


def claim(run_dir: str | Path, settings: dict[str, Any], fresh: bool = False, write: bool = True) -> None:
    """Make ``run_dir`` the home of a run with these settings, recorded in ``run.json``.

    A directory without results takes any settings; one with results only the settings it was made with.
    Nothing is written or deleted when the settings are refused.

    Args:
        run_dir: the run directory (created if missing).
        settings: ``{dotted option: JSON value}`` of every setting that shapes an image.
        fresh: delete the directory's images, snapshots, manifest and checkpoints first (``--fresh``).
        write: record the settings (only the first process of a run does).

    Raises:
        UsageError: the directory holds results made with other (or unrecorded) settings; the message names
            the directory, the settings that differ and the two ways out.
    """
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if fresh:
        for name in RESULTS:
            target = run_dir / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    elif has_results(run_dir):
        before = json.loads(path.read_text(encoding="utf-8"))["settings"] if path.is_file() else None
        if before == settings:
            return
        what = differences(before, settings) if before else "settings it does not record (an older clip-inversion)"
        raise UsageError(
            f"{run_dir} holds results made with {what}: give this run its own --trainer.default_root_dir, "
            "or pass --fresh to delete that run's images, manifest and checkpoints and start it again"
        )
    if not write:
        return
    check_writable(run_dir)
    write_json(path, {"settings": settings})


def record_finished(run_dir: str | Path, command: list[str], files: list[str], prompts: int) -> None:
    """Write ``finished.json``: this command line left nothing to do in ``run_dir`` (``prompts`` finished).

    Args:
        run_dir: the run directory, as the command named it.
        command: the command line's arguments (``["fit", "--config", ...]``).
        files: files the command read that its arguments do not name (a config's prompts file).
        prompts: the prompts finished.
    """
    stamp = {**_fingerprint(command, files), "results": _results(run_dir), "prompts": prompts}
    with contextlib.suppress(OSError):  # a shortcut only: a directory that cannot take it reruns the whole way
        write_json(Path(run_dir) / FINISHED, stamp)


def finished_before(run_dir: str | Path, command: list[str]) -> int | None:
    """The prompts finished when this same command line last left nothing to do in ``run_dir``, or ``None``
    unless everything it depends on is as it was then: the arguments, the working directory, the bytes of the
    files it read, clip-inversion's code and its libraries' versions, the manifest and ``run.json``, and every
    finished prompt's image."""
    path = Path(run_dir) / FINISHED
    try:
        stamp = json.loads(path.read_text(encoding="utf-8"))
        same = {k: stamp[k] for k in ("command", "cwd", "files", "code")} == _fingerprint(command, stamp["files"])
        return stamp["prompts"] if same and stamp["results"] == _results(run_dir) else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _fingerprint(command: list[str], files: list[str]) -> dict[str, Any]:
    """The command, the working directory, a digest of every file it names or read, and the code's version."""
    named = [a.split("=", 1)[-1] for a in command]  # "--data.prompts_file=p.txt" names p.txt
    paths = sorted({p for p in [*named, *files] if p and os.path.isfile(p)})
    return {"command": list(command), "cwd": os.getcwd(), "files": {p: _digest(Path(p)) for p in paths},
            "code": _code_version()}  # fmt: skip


def _results(run_dir: str | Path) -> dict[str, Any]:
    """Digests of the manifest and ``run.json``, and how many recorded prompts still have their image."""
    run_dir = Path(run_dir)
    return {
        "manifest": _digest(run_dir / MANIFEST),
        "run": _digest(run_dir / RUN_FILE),
        "images": len(finished(run_dir)),
    }


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _code_version() -> str:
    """A digest of clip-inversion's source files (names, sizes, times) and the versions of the libraries that
    parse and resolve a config: another version may resolve the same command line otherwise."""
    package, digest = Path(__file__).parent, hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(package)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    for dist in ("torch", "lightning", "jsonargparse", "open_clip_torch", "kornia"):
        try:
            digest.update(f"{dist}={metadata.version(dist)}\n".encode())
        except metadata.PackageNotFoundError:
            digest.update(f"{dist}=none\n".encode())
    return digest.hexdigest()


def write_json(path: Path, value: Any) -> None:
    """Write JSON through a temporary file and a rename: a reader never meets a half-written file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, ensure_ascii=False)
    os.replace(tmp, path)


@contextmanager
def kept_as_found(run_dir: str | Path, started: Callable[[], bool], enabled: bool = True) -> Iterator[None]:
    """Leave ``run_dir`` as it was found when the block fails before ``started()``: a run that never took a step
    leaves no ``run.json`` of its own (an earlier one is put back), no empty TensorBoard version and no new
    folder. Nothing that was there before is deleted.

    Args:
        run_dir: the run directory (it need not exist yet).
        started: whether the run has taken a step, asked after a failure.
        enabled: watch at all (only the first process of a run writes).
    """
    run_dir = Path(run_dir)
    existed, before = run_dir.is_dir(), _paths(run_dir) if enabled else set()
    settings = (run_dir / RUN_FILE).read_bytes() if enabled and (run_dir / RUN_FILE).is_file() else None
    try:
        yield
    except BaseException:
        if enabled and not started():
            if settings is not None:
                (run_dir / RUN_FILE).write_bytes(settings)
            new = _paths(run_dir) - before
            for path in sorted(p for p in new if p.parent not in new):  # the outermost new files and folders
                shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
            if not existed and run_dir.is_dir() and not any(run_dir.iterdir()):
                run_dir.rmdir()
        raise


def _paths(folder: Path) -> set[Path]:
    """Every file and folder under ``folder`` (none when it does not exist)."""
    paths = set()
    for root, dirs, files in os.walk(folder):
        paths.update(Path(root, name) for name in dirs + files)
    return paths


def differences(before: dict[str, Any], now: dict[str, Any]) -> str:
    """``"model.steps 200 -> 50, model.tv 0.05 -> 0.1"``: every setting whose value differs."""
    keys = [k for k in dict.fromkeys([*before, *now]) if before.get(k) != now.get(k)]
    return "other settings (" + ", ".join(f"{k} {_show(before.get(k))} -> {_show(now.get(k))}" for k in keys) + ")"


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


@dataclass
class Inversion:
    """One prompt's result: its ``manifest.jsonl`` record and its final image ``(3, H, W)`` in [0, 1]."""

    prompt: str
    image: Tensor
    record: dict


def read_manifest(run_dir: str | Path) -> list[Inversion]:
    """Every inversion recorded in a run directory with its image, in manifest order (withheld ones left out)."""
    from torchvision.io import ImageReadMode, decode_image

    run_dir = Path(run_dir)
    return [
        Inversion(r["prompt"], decode_image(str(run_dir / r["image"]), mode=ImageReadMode.RGB).float() / 255, r)
        for r in read_records(run_dir)
        if r["image"] is not None
    ]
