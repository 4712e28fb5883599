"""Contact sheets: a run's prompts as rows, their snapshots and final image as columns, labelled; any labelled grid."""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from clip_inversion.rundir import read_manifest, snapshots


def contact_sheet(run_dir: str | Path, out: str | Path, cell: int = 96, label_width: int = 150) -> Path:
    """Draw every prompt of a run as a labelled row: snapshots (oldest first), then the final image.

    Args:
        run_dir: a finished run directory (``manifest.jsonl``, ``images/``, ``snapshots/``).
        out: the PNG to write.
        cell: side of each image in the sheet, in pixels (nearest-neighbour scaled).
        label_width: width of the prompt column.

    Returns:
        The path written.
    """
    run_dir, out = Path(run_dir), Path(out)
    rows = []
    for inversion in read_manifest(run_dir):
        columns = [(str(step), path) for step, path in snapshots(run_dir, inversion.record)]
        columns.append(("final", run_dir / inversion.record["image"]))
        rows.append((inversion.prompt, columns))
    titles = [f"step {t}" if t != "final" else t for t, _ in rows[0][1]]
    return grid_sheet(
        [(prompt, [path for _, path in columns]) for prompt, columns in rows], titles, out, cell, label_width
    )


def grid_sheet(
    rows: list[tuple[str, list[Path]]], titles: list[str], out: str | Path, cell: int = 96, label_width: int = 150
) -> Path:
    """Draw images as a labelled grid: one row a label, one column a title.

    Args:
        rows: ``(label, image paths)`` for each row, left to right (a row may be shorter than the others).
        titles: the column headers.
        out: the PNG to write.
        cell: side of each image in the sheet, in pixels (nearest-neighbour scaled).
        label_width: width of the label column.

    Returns:
        The path written.
    """
    out = Path(out)
    width = label_width + cell * max([len(titles), *(len(paths) for _, paths in rows)])
    header = 16
    sheet = Image.new("RGB", (width, header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(titles):
        draw.text((label_width + j * cell + 4, 2), title, fill="black")
    for i, (label, paths) in enumerate(rows):
        top = header + i * cell
        lines = label.splitlines()[:3]  # up to three lines, centred on the row
        for k, line in enumerate(lines):
            draw.text(
                (4, top + cell // 2 - 6 + 12 * (2 * k - len(lines) + 1) // 2), line[: label_width // 6], fill="black"
            )
        for j, path in enumerate(paths):
            tile = Image.open(path).convert("RGB").resize((cell, cell), Image.NEAREST)
            sheet.paste(tile, (label_width + j * cell, top))
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Draw a labelled contact sheet of an inversion run.")
    parser.add_argument("run_dir")
    parser.add_argument("out", help="PNG file to write")
    ns = parser.parse_args(args)
    print(contact_sheet(ns.run_dir, ns.out))


if __name__ == "__main__":
    main()
