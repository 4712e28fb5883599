"""Compare image parameterisations and one- versus two-model ensembles on the toy world, scored by the judge.

    python benchmarks/compare_parameterisations.py --seeds 0 1                 # every setting
    python benchmarks/compare_parameterisations.py --only pixels fourier       # some settings
    python benchmarks/compare_parameterisations.py --steps 50 --baseline-steps 100 --only "pixels + augment"
    python benchmarks/compare_parameterisations.py --steps 100 -- --model.tv=0.01   # CLI overrides after --
    python benchmarks/compare_parameterisations.py --world b --only pixels fourier  # the held-out world B

Every setting inverts a world's 30 colour-shape captions (2 batches of 15) with the 8-copy affine recipe
(``configs/augment/affine-8.yaml`` over the quickstart, its resolution schedule scaled to the steps: the
recipe docs/parameterisations.md was measured with), by the world's subject, scored by its judge (``--world``:
``a``, the project's world, or ``b``, the held-out clutter world with ViT subject and judge). The ensembles
(world A only) add to ``toy-subject`` (a ResNet tower) a
second subject of the same architecture, ``toy-subject-b`` (``configs/toy/subject-b.yaml``), or of
another, ``toy-subject-efficientnet`` (``configs/toy/subject-efficientnet.yaml``); the judge,
``toy-judge`` (a BYOB net), is in no ensemble. The baseline (``--baseline``, raw pixels by default, at
``--baseline-steps``) runs first. Prints one Markdown row a setting: the judge's zero-shot accuracy among
the 30 captions (colour; colour and shape) as mean (min-max) over seeds; colour and shape pooled over
seeds with its 95% Wilson interval, and minus the baseline's with a 95% Newcombe interval (conservative:
both settings start from the same seeds' images); the judge's mean cosine to the prompt; and the wall time
per step (30 prompts, model loading included). Set ``OMP_NUM_THREADS=1`` on a busy machine.
"""

from __future__ import annotations

import argparse
import statistics

from toy_judge import ROOT, cell, judge_world, pooled_count  # benchmarks/ is on the path when a script runs

from clip_inversion.studies.probes import newcombe_interval, wilson_interval
from clip_inversion.toyworld.evaluate import WORLDS

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
        "--model.image=clip_inversion.core.image.FourierImage",
        "--model.image.squash=clamp",
        ADAM,
        "--model.optimizer.lr=0.2",
    ],
    "pyramid": [
        "--model.image=clip_inversion.core.image.PyramidImage",
        "--model.image.decay=0.5",
        ADAM,
        "--model.optimizer.lr=0.1",
    ],
}
# The base of every setting: the quickstart before issue 17 (8 copies, the reference affine).
AFFINE_8 = ["--config", str(ROOT / "configs" / "augment" / "affine-8.yaml")]
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
WORLD_A_ONLY = {name for name, args in SETTINGS.items() if any("toy-subject-" in a for a in args)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="a", help="a: the project's world; b: held out")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=200, help="steps a prompt; the image grows at half")
    parser.add_argument("--only", nargs="+", choices=sorted(SETTINGS), help="settings to run (default: all)")
    parser.add_argument("--baseline", choices=sorted(SETTINGS), default="pixels", help="run first, compared with")
    parser.add_argument("--baseline-steps", type=int, help="the baseline's steps (default: --steps)")
    parser.add_argument("overrides", nargs="*", help="CLI arguments for clip-inversion, after --")
    args = parser.parse_args()
    wanted = [(name, args.steps) for name in args.only or SETTINGS]
    baseline = (args.baseline, args.baseline_steps or args.steps)
    world_a_only = sorted({n for n, _ in [baseline, *wanted]} & WORLD_A_ONLY)
    if args.world != "a" and world_a_only:
        parser.error(f"{', '.join(world_a_only)}: ensembles of world A's models; with --world {args.world} use --only")
    print(
        "| setting | steps | colour | colour and shape | pooled [95% CI] | minus baseline [95% CI] | judge cosine "
        "| s/step |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    correct = {}  # (setting, steps) -> (images read right, images) over every seed
    for name, steps in dict.fromkeys([baseline, *wanted]):
        # The schedule alone, scaled to the steps: no checkpoints or progress images in a benchmark.
        schedule = (
            "--trainer.callbacks=[{class_path: clip_inversion.callbacks.ResolutionSchedule, "
            f"init_args: {{milestones: {{{steps // 2}: 64}}}}}}]"
        )
        settings = [*AFFINE_8, f"--model.steps={steps}", schedule, *SETTINGS[name], *args.overrides]
        runs = [judge_world(seed, ROOT / "configs" / "quickstart.yaml", settings, args.world) for seed in args.seeds]
        scores, seconds = [r[0] for r in runs], [r[1] / (2 * steps) for r in runs]
        correct[name, steps] = k = pooled_count(scores, "caption")
        n = k[1]
        low, high = wilson_interval(*k)
        diff = "-"
        if (name, steps) != baseline:
            d_low, d_high = newcombe_interval(*k, *correct[baseline])
            d = k[0] / n - correct[baseline][0] / correct[baseline][1]
            diff = f"{100 * d:+.0f} [{100 * d_low:+.0f}, {100 * d_high:+.0f}]"
        print(
            f"| {name} | {steps} | {cell(scores, 'colour', True)} | {cell(scores, 'caption', True)} "
            f"| {100 * k[0] / n:.0f}% [{100 * low:.0f}, {100 * high:.0f}] | {diff} "
            f"| {cell(scores, 'judge_cosine', False, decimals=3)} | {statistics.mean(seconds):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
