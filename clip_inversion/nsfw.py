"""An offline NSFW screen for inverted images: NudeNet's detector, whose ONNX weights ship inside its wheel.

Benign prompts can invert to explicit images (the paper's Section 5), so a run can score every image it
writes and blur or withhold the flagged ones (``--writer.nsfw=score|blur|withhold``). Needs the extra:
``pip install "clip-inversion[nsfw]"``.
"""

from __future__ import annotations

from typing import Literal

import kornia
import torch
from torch import Tensor

from clip_inversion.errors import UsageError

Action = Literal["score", "blur", "withhold"]

# NudeNet 3.4's labels; by default only exposed explicit parts flag an image (not faces, feet or covered parts).
LABELS = frozenset(
    f"{part}_{state}"
    for part in ("FEMALE_GENITALIA", "BUTTOCKS", "FEMALE_BREAST", "FEET", "BELLY", "ARMPITS", "ANUS")
    for state in ("EXPOSED", "COVERED")
) | {"FACE_FEMALE", "FACE_MALE", "MALE_BREAST_EXPOSED", "MALE_GENITALIA_EXPOSED"}
EXPLICIT = (
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "BUTTOCKS_EXPOSED",
    "ANUS_EXPOSED",
)


class NSFWScreen:
    """Scores images with NudeNet and flags those with an explicit detection of at least ``threshold``.

    Args:
        action: ``score`` records the scores only; ``blur`` also blurs flagged images beyond recognition;
            ``withhold`` also keeps them off disk and out of TensorBoard.
        threshold: the detection score (0-1) from which an image is flagged.
        labels: the NudeNet labels that count (default: ``EXPLICIT``).

    Raises:
        UsageError: nudenet is not installed, or a label is not one of NudeNet's.
    """

    def __init__(self, action: Action = "score", threshold: float = 0.5, labels: tuple[str, ...] = EXPLICIT) -> None:
        try:
            from nudenet import NudeDetector
        except ImportError as e:
            raise UsageError(f'--writer.nsfw={action} needs nudenet: pip install "clip-inversion[nsfw]"') from e
        if action not in ("score", "blur", "withhold"):
            raise UsageError(f"--writer.nsfw must be score, blur or withhold, not {action!r}")
        if not 0 < threshold <= 1:
            raise UsageError(f"--writer.nsfw_threshold must be in (0, 1], not {threshold}")
        unknown = sorted(set(labels) - LABELS)
        if unknown:
            raise UsageError(f"unknown NudeNet label(s) {unknown}; NudeNet's labels: {sorted(LABELS)}")
        self.action, self.threshold, self.labels = action, threshold, set(labels)
        self.detector = NudeDetector()

    def scores(self, images: Tensor) -> list[dict]:
        """The highest explicit detection score of each image, and the labels at or above the threshold.

        Args:
            images: ``(N, 3, H, W)`` in [0, 1].

        Returns:
            One ``{"score": float, "labels": [str, ...], "flagged": bool}`` an image.
        """
        # NudeNet reads OpenCV's layout: H x W x 3 uint8 in BGR order.
        arrays = (images.detach().float().clamp(0, 1) * 255).round().byte().flip(1).permute(0, 2, 3, 1).cpu().numpy()
        results = []
        for detections in self.detector.detect_batch(list(arrays), batch_size=8):
            hits = [d for d in detections if d["class"] in self.labels]
            score = max((d["score"] for d in hits), default=0.0)
            labels = sorted({d["class"] for d in hits if d["score"] >= self.threshold})
            results.append({"score": round(score, 4), "labels": labels, "flagged": bool(labels)})
        return results

    def apply(self, images: Tensor) -> tuple[Tensor, list[dict]]:
        """Screen images: the images safe to show and their scores.

        Args:
            images: ``(N, 3, H, W)`` in [0, 1].

        Returns:
            The images, ``(N, 3, H, W)`` in [0, 1], flagged ones blurred (``blur``) or mid-grey (``withhold``),
            and :meth:`scores` with ``action`` (``blurred``, ``withheld`` or ``None``) added to each entry.
        """
        results = self.scores(images)
        flagged = torch.tensor([r["flagged"] for r in results], dtype=torch.bool)
        for r in results:
            r["action"] = {"blur": "blurred", "withhold": "withheld"}.get(self.action) if r["flagged"] else None
        if self.action != "score" and flagged.any():
            images = images.clone()
            images[flagged] = blur(images[flagged]) if self.action == "blur" else 0.5
        return images, results


def blur(images: Tensor) -> Tensor:
    """A Gaussian blur with a sigma of a tenth of the image side: colours stay, shapes do not.

    Args:
        images: ``(N, 3, H, W)`` in [0, 1].

    Returns:
        ``(N, 3, H, W)`` in [0, 1].
    """
    sigma = images.shape[-1] / 10
    size = int(2 * round(3 * sigma) + 1)
    return kornia.filters.gaussian_blur2d(images, (size, size), (sigma, sigma), border_type="reflect")
