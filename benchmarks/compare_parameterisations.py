"""Compare image parameterisations and one- versus two-model ensembles on the toy world, scored by the judge.

    python benchmarks/compare_parameterisations.py --seeds 0 1                 # every setting
    python benchmarks/compare_parameterisations.py --only pixels fourier       # some settings
    python benchmarks/compare_parameterisations.py --steps 100 -- --model.tv=0.01   # CLI overrides after --

Every setting inverts the world's 30 colour-shape captions (2 batches of 15) with the quickstart recipe
(its resolution schedule scaled to ``--steps``). The ensembles add a second subject, ``toy-subject-b``
(trained by ``configs/toy/subject-b.yaml``), to ``toy-subject``; the judge, ``toy-judge``, is in no
ensemble. Prints one Markdown row a setting: the judge's zero-shot accuracy among the 30 captions
(colour; colour and shape) and its mean cosine to the prompt, as mean (min-max) over seeds, and the
wall time per step (30 prompts, model loading included). Set ``OMP_NUM_THREADS=1`` on a busy machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from clip_inversion.cli import run
from clip_inversion.toyworld.evaluate import judge_run

ROOT = Path(__file__).parents[1]
# A second subject, trained by `clip-inversion-train-toy fit --config configs/toy/subject-b.yaml` (not shipped yet).
ENSEMBLE = ["--model.ensemble=[{model_name: toy-subject-b}]"]

# Learning rates are per parameterisation: the same Adam step moves raw pixels, Fourier coefficients and
# pyramid levels by very different amounts in the image.
ADAM = "--model.optimizer=torch.optim.Adam"
PARAMETERISATIONS = {
    "pixels": [ADAM, "--model.optimizer.lr=0.1"],
    "fourier": [
        "--model.image=clip_inversion.image.FourierImage",
        "--model.image.squash=clamp",
        ADAM,
        "--model.optimizer.lr=0.2",
    ],
    "pyramid": [
        "--model.image=clip_inversion.image.PyramidImage",
        "--model.image.decay=0.5",
        ADAM,
        "--model.optimizer.lr=0.1",
    ],
}
SETTINGS = {
    **{name: args for name, args in PARAMETERISATIONS.items()},
    **{f"{name} + ensemble": args + ENSEMBLE for name, args in PARAMETERISATIONS.items()},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=200, help="steps a prompt; the image grows at half")
    parser.add_argument("--only", nargs="+", choices=sorted(SETTINGS), help="settings to run (default: all)")
    parser.add_argument("overrides", nargs="*", help="CLI arguments for clip-inversion, after --")
    args = parser.parse_args()
    print("| setting | colour | colour and shape | judge cosine | s/step |")
    print("| --- | --- | --- | --- | --- |")
    for name in args.only or SETTINGS:
        scores, seconds = [], []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as run_dir:
                start = time.perf_counter()
                run(
                    [
                        "fit",
                        "--config",
                        str(ROOT / "configs" / "quickstart.yaml"),
                        "--data.prompts=null",
                        f"--data.prompts_file={ROOT / 'configs' / 'prompts' / 'toy-world.txt'}",
                        "--data.batch_size=15",
                        f"--data.seed={seed}",
                        f"--model.steps={args.steps}",
                        # the schedule alone: no checkpoints or progress images in a benchmark
                        f"--trainer.callbacks=[{{class_path: clip_inversion.callbacks.ResolutionSchedule, "
                        f"init_args: {{milestones: {{{args.steps // 2}: 64}}}}}}]",
                        f"--trainer.default_root_dir={run_dir}",
                        "--trainer.enable_progress_bar=false",
                        "--trainer.logger=false",
                        *SETTINGS[name],
                        *args.overrides,
                    ]
                )
                seconds.append((time.perf_counter() - start) / (2 * args.steps))
                scores.append(judge_run(run_dir))
        print(
            f"| {name} | {_cell(scores, 'colour', True)} | {_cell(scores, 'caption', True)} "
            f"| {_cell(scores, 'judge_cosine', False)} | {statistics.mean(seconds):.2f} |",
            flush=True,
        )


def _cell(scores: list[dict[str, float]], key: str, percent: bool) -> str:
    values = [s[key] * (100 if percent else 1) for s in scores]
    fmt = "{:.0f}" if percent else "{:.3f}"
    spread = f" ({fmt.format(min(values))}-{fmt.format(max(values))})" if len(values) > 1 else ""
    return fmt.format(statistics.mean(values)) + ("%" if percent else "") + spread


if __name__ == "__main__":
    main()
