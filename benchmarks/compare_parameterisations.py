"""Compare image parameterisations and one- versus two-model ensembles on the toy world, scored by the judge.

    python benchmarks/compare_parameterisations.py --seeds 0 1                 # every setting
    python benchmarks/compare_parameterisations.py --only pixels fourier       # some settings
    python benchmarks/compare_parameterisations.py --steps 100 -- --model.tv=0.01   # CLI overrides after --

Every setting inverts the world's 30 colour-shape captions (2 batches of 15) with the quickstart recipe
(its resolution schedule scaled to ``--steps``). The ensembles add to ``toy-subject`` (a ResNet tower) a
second subject of the same architecture, ``toy-subject-b`` (``configs/toy/subject-b.yaml``), or of
another, ``toy-subject-efficientnet`` (``configs/toy/subject-efficientnet.yaml``); the judge,
``toy-judge`` (a BYOB net), is in no ensemble. Prints one Markdown row a setting: the judge's zero-shot
accuracy among the 30 captions (colour; colour and shape) and its mean cosine to the prompt, as mean
(min-max) over seeds, and the wall time per step (30 prompts, model loading included). Set
``OMP_NUM_THREADS=1`` on a busy machine.
"""

from __future__ import annotations

import argparse
import statistics

from toy_judge import ROOT, cell, judge_world  # benchmarks/ is on the path when a script of it runs

# Second subjects, shipped: `clip-inversion-train-toy fit --config configs/toy/subject-b.yaml` (the same
# architecture as toy-subject, other seeds) and `... configs/toy/subject-efficientnet.yaml` (another one).
ENSEMBLE = ["--model.ensemble=[{model_name: toy-subject-b}]"]
EFFICIENTNET = ["--model.ensemble=[{model_name: toy-subject-efficientnet}]"]

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
# Every augmentation of the pipeline (crops, flips, colour jitter and shift, noise) on top of the affine.
AUGMENT = ["--config", str(ROOT / "configs" / "augment" / "all.yaml")]
SETTINGS = {
    **{name: args for name, args in PARAMETERISATIONS.items()},
    **{f"{name} + augment": AUGMENT + args for name, args in PARAMETERISATIONS.items()},
    **{f"{name} + ensemble": args + ENSEMBLE for name, args in PARAMETERISATIONS.items()},
    **{f"{name} + efficientnet": args + EFFICIENTNET for name, args in PARAMETERISATIONS.items()},
    "efficientnet alone": [*PARAMETERISATIONS["pixels"], "--model.clip.model_name=toy-subject-efficientnet"],
    "pixels + augment + ensemble": AUGMENT + PARAMETERISATIONS["pixels"] + ENSEMBLE,
    "pixels + augment + efficientnet": AUGMENT + PARAMETERISATIONS["pixels"] + EFFICIENTNET,
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
    # The schedule alone, scaled to the steps: no checkpoints or progress images in a benchmark.
    schedule = (
        "--trainer.callbacks=[{class_path: clip_inversion.callbacks.ResolutionSchedule, "
        f"init_args: {{milestones: {{{args.steps // 2}: 64}}}}}}]"
    )
    for name in args.only or SETTINGS:
        settings = [f"--model.steps={args.steps}", schedule, *SETTINGS[name], *args.overrides]
        runs = [judge_world(seed, ROOT / "configs" / "quickstart.yaml", settings) for seed in args.seeds]
        scores, seconds = [r[0] for r in runs], [r[1] / (2 * args.steps) for r in runs]
        print(
            f"| {name} | {cell(scores, 'colour', True)} | {cell(scores, 'caption', True)} "
            f"| {cell(scores, 'judge_cosine', False, decimals=3)} | {statistics.mean(seconds):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
