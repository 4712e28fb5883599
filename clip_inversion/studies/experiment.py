"""``clip-inversion-experiment``: the same prompts over several seeds and models, scored by a judge, reported.

An experiment is a YAML file (``configs/experiments/*.yaml``)::

    name: planted-bias
    models: [toy-biased-subject, toy-control-subject]   # NAME or NAME@TAG_OR_FILE, as for clip-inversion-sweep
    prompts: [a star, a circle]
    seeds: 16                                   # each prompt is inverted from seeds 0 .. seeds-1
    configs: [configs/quickstart.yaml]          # the clip-inversion fit configs, composed in order
    args: [--model.steps=100]                   # more clip-inversion fit options
    judge: toy-judge                            # the independent judge (and judge_pretrained: TAG)
    attributes: [configs/attributes/colour.yaml]
    candidates: null                            # prompts file the judge classifies among (default: prompts)
    control: toy-control-subject                # compare every other model's probe proportions with this one
    root: runs/planted-bias

An experiment may instead name ``groups`` of models, each group several independently trained models of
one condition (``{1k: [a, b, c], 10k: [d, e, f]}``, smallest first); ``models`` is then every group's
models, and the report adds ``groups.csv``: each group's accuracy with a 95% interval over its models
(training runs) and their images together, and its difference from the previous and the first group
(``studies/groups.py``).

``clip-inversion-experiment --config FILE`` inverts every prompt x seed with every model into
``ROOT/<model>/`` (rerunning resumes), then writes ``ROOT/report/``: ``scores.csv`` (the judge's cosine and
zero-shot accuracy with its 95% Wilson interval, per model and prompt), ``components.csv`` (for composite
prompts such as ``"a red circle | a blue square:0.5"``: the judge's cosine to each term alone and the share of
images closest to it), ``probes.csv`` (attribute
proportions with 95% Wilson intervals; ``comparisons.csv``: each model against the ``control`` model, with
95% Newcombe intervals of the differences), ``summary.md`` (both as Markdown), ``contact-sheet.png`` (one row a
model and prompt, one column a seed) and the sheet and scores in TensorBoard under ``ROOT/report/tensorboard``.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import yaml

from clip_inversion.cli import exit_on_error, run
from clip_inversion.core.clip import CLIPSpec
from clip_inversion.core.targets import parse_target
from clip_inversion.data import read_prompts
from clip_inversion.rundir import read_manifest, safe_name
from clip_inversion.studies.groups import group_rows
from clip_inversion.studies.metrics import (
    ZeroShotAccuracy,
    as_judge,
    component_scores,
    mean_subject_cosine,
    score_images,
)
from clip_inversion.studies.probes import AttributeSet, compare, probe, wilson_interval
from clip_inversion.studies.report import grid_sheet
from clip_inversion.sweep import model_args, model_dir
from clip_inversion.usage import experiment_parser


@dataclass
class Experiment:
    """One experiment: what to invert with which models, and how to score it (see the module docstring)."""

    name: str
    models: list[str] = field(default_factory=list)
    prompts: list[str] = field(default_factory=list)
    seeds: int = 8
    configs: list[str] = field(default_factory=lambda: ["configs/quickstart.yaml"])
    args: list[str] = field(default_factory=list)
    judge: str = "toy-judge"
    judge_pretrained: str | None = None
    attributes: list[str] = field(default_factory=list)
    candidates: str | None = None
    control: str | None = None
    root: str | None = None
    groups: dict[str, list[str]] | None = None

    def __post_init__(self) -> None:
        if self.groups:
            self.groups = {str(k): list(v) for k, v in self.groups.items()}
            grouped = [m for models in self.groups.values() for m in models]
            if self.models and set(self.models) != set(grouped):
                raise ValueError(f"experiment {self.name!r}: models and groups name different models; give one")
            self.models = self.models or list(dict.fromkeys(grouped))
        if not self.models or not self.prompts or self.seeds < 1:
            raise ValueError(f"experiment {self.name!r} needs models, prompts and at least one seed")
        if self.control is not None and self.control not in self.models:
            raise ValueError(f"experiment {self.name!r}: control {self.control!r} is not one of its models")
        self.root = self.root or f"runs/{safe_name(self.name)}"

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: object) -> Experiment:
        """Read an experiment file; ``overrides`` that are not ``None`` replace its values."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)


def prompts_file(experiment: Experiment) -> Path:
    """Write ``ROOT/prompts.jsonl``: every prompt x seed, with an id naming both and the seed itself."""
    path = Path(experiment.root) / "prompts.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"id": f"p{i:02d}-s{seed:03d}", "prompt": prompt, "seed": seed}
        for i, prompt in enumerate(experiment.prompts)
        for seed in range(experiment.seeds)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def invert_all(experiment: Experiment) -> dict[str, Path]:
    """Invert every prompt x seed with every model (finished prompts are skipped); each model's run dir."""
    prompts = prompts_file(experiment)
    configs = [a for path in experiment.configs for a in ("--config", path)]
    run_dirs = {}
    for model in experiment.models:
        run_dirs[model] = model_dir(experiment.root, model)
        run(
            [
                "fit",
                *configs,
                "--data.prompts=null",
                f"--data.prompts_file={prompts}",
                *experiment.args,
                *model_args(model),
                f"--trainer.default_root_dir={run_dirs[model]}",
            ]
        )
    return run_dirs


def score(experiment: Experiment, run_dirs: dict[str, Path]) -> dict[str, list[dict]]:
    """The report's tables: ``scores`` (the judge's, per model and prompt, and ``all``), ``probes`` (every
    attribute probe's rows) and ``components`` (each term of each composite prompt, :func:`component_scores`)."""
    judge = as_judge(CLIPSpec(experiment.judge, experiment.judge_pretrained))
    candidates = [p.text for p in read_prompts(experiment.candidates)] if experiment.candidates else None
    attributes = [AttributeSet.from_yaml(path) for path in experiment.attributes]
    tables: dict[str, list[dict]] = {"scores": [], "probes": [], "components": [], "groups": []}
    outcomes: dict[str, torch.Tensor] = {}  # each image's zero-shot outcome, for the groups
    classes = candidates or list(dict.fromkeys(experiment.prompts))
    classifier = ZeroShotAccuracy(classes, judge) if experiment.groups else None
    for model, run_dir in run_dirs.items():
        inversions = [inv for inv in read_manifest(run_dir) if inv.prompt in experiment.prompts]
        images, prompts = torch.stack([inv.image for inv in inversions]), [inv.prompt for inv in inversions]
        result = score_images(images, prompts, judge, candidates)
        if classifier is not None:
            predicted = classifier.predict(images).cpu()
            outcomes[model] = predicted == torch.tensor([classifier.prompts.index(p) for p in prompts])
        subject = {p: [inv.record for inv in inversions if inv.prompt == p] for p in result["per_prompt"]}
        for prompt, values in result["per_prompt"].items():
            tables["scores"].append({"model": model, "prompt": prompt, **_rounded(values), **_subject(subject[prompt])})
        everything = {"images": len(prompts), "judge_cosine": result["judge_cosine"]}
        everything["judge_accuracy"] = result["judge_accuracy"]
        all_subject = _subject([r for records in subject.values() for r in records])
        tables["scores"].append({"model": model, "prompt": "all", **_rounded(everything), **all_subject})
        for attribute_set in attributes:
            tables["probes"] += probe(images, prompts, attribute_set, judge, label=model)
        for prompt in dict.fromkeys(prompts):
            if len(parse_target(prompt)) > 1:
                mine = images[[i for i, p in enumerate(prompts) if p == prompt]]
                for row in component_scores(mine, prompt, judge):
                    tables["components"].append({"model": model, "prompt": prompt, "images": len(mine), **row})
    if experiment.groups:
        tables["groups"] = group_rows(experiment.groups, outcomes)
    tables["components"] = [
        {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()} for r in tables["components"]
    ]
    return tables


def _rounded(values: dict) -> dict:
    """Floats to 4 decimals, and the 95% Wilson interval of ``judge_accuracy`` over ``images``."""
    low, high = wilson_interval(round(values["judge_accuracy"] * values["images"]), values["images"])
    values = {**values, "judge_accuracy_low": low, "judge_accuracy_high": high}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in values.items()}


def _subject(records: list[dict]) -> dict:
    return {"subject_cosine": round(mean_subject_cosine(records), 4)}


def markdown_table(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows of dicts as a Markdown table (columns: the first row's keys unless given)."""
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    # A composite prompt ("a red circle | a star:0.5") holds pipes, which would split its cell.
    lines += ["| " + " | ".join(str(r.get(c, "")).replace("|", "\\|") for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def probe_summary(probes: list[dict]) -> str:
    """Per attribute, one row a model and prompt, one column a class: ``proportion [low, high]``, ``*`` when
    the 95% interval lies above chance."""
    parts = []
    for attribute in dict.fromkeys(r["attribute"] for r in probes):
        rows = [r for r in probes if r["attribute"] == attribute]
        classes = list(dict.fromkeys(r["class"] for r in rows))
        table = {}
        for r in rows:
            cell = f"{r['proportion']:.2f} [{r['low']:.2f}, {r['high']:.2f}]" + (" *" if r["above_chance"] else "")
            table.setdefault((r["model"], r["prompt"], r["images"]), {})[r["class"]] = cell
        flat = [{"model": m, "prompt": p, "images": n, **cells} for (m, p, n), cells in table.items()]
        chance = rows[0]["chance"]
        parts.append(
            f"### {attribute} (chance {chance:.2f}; * = 95% interval above chance)\n\n"
            + markdown_table(flat, ["model", "prompt", "images", *classes])
        )
    return "\n\n".join(parts)


def write_report(experiment: Experiment, run_dirs: dict[str, Path], tables: dict[str, list[dict]]) -> Path:
    """Write ``ROOT/report/``: CSV and Markdown tables, the contact sheet, and TensorBoard; the report dir.

    Args:
        tables: :func:`score`'s tables; each non-empty one is written as ``<name>.csv``.
    """
    report = Path(experiment.root) / "report"
    report.mkdir(parents=True, exist_ok=True)
    for name, rows in tables.items():
        if rows:
            _write_csv(report / f"{name}.csv", rows)
    scores, probes, components, groups = tables["scores"], tables["probes"], tables["components"], tables["groups"]
    rows = []
    for model, run_dir in run_dirs.items():
        by_prompt: dict[str, list[tuple[int, Path]]] = {}
        for inv in read_manifest(run_dir):
            by_prompt.setdefault(inv.prompt, []).append((inv.record["seed"], Path(run_dir) / inv.record["image"]))
        for prompt in experiment.prompts:
            rows.append((f"{model}\n{prompt}", [path for _, path in sorted(by_prompt.get(prompt, []))]))
    titles = [f"seed {s}" for s in range(experiment.seeds)]
    longest = max(len(line) for label, _ in rows for line in label.splitlines())
    label_width = max(160, 8 + 6 * longest)  # the default font is about 6 px a character
    sheet = grid_sheet(rows, titles, report / "contact-sheet.png", cell=64, label_width=label_width)
    settings = {k: v for k, v in asdict(experiment).items() if k != "name"}
    summary = [
        f"# {experiment.name}",
        "",
        "```yaml\n" + yaml.safe_dump(settings, sort_keys=False).strip() + "\n```",
        "",
        f"![contact sheet]({sheet.name})",
        "",
        f"## The judge ({experiment.judge}): cosine to the prompt, zero-shot accuracy",
        "",
        markdown_table(scores),
    ]
    if components:
        summary += [
            "",
            "## Composite prompts: each term's share (judge cosine to the term alone; closest: share of images",
            "nearer this term than any other positive one)",
            "",
            markdown_table(components),
        ]
    if groups:
        summary += [
            "",
            "## Groups: accuracy with 95% intervals over models (training runs) and images together",
            "",
            markdown_table(groups),
        ]
    if probes:
        summary += ["", "## Attribute probes", "", probe_summary(probes)]
    comparisons = compare(probes, experiment.control) if probes and experiment.control else []
    if comparisons:
        _write_csv(report / "comparisons.csv", comparisons)
        columns = ["model", "prompt", "class", "proportion", "control_proportion", "difference", "low", "high"]
        differing = [r for r in comparisons if r["differs"]]
        summary += [
            "",
            f"## Against the control ({experiment.control}): differences with 95% Newcombe intervals",
            "",
            f"{len(differing)} of {len(comparisons)} (model, prompt, class) proportions differ from the control's:",
            "",
            markdown_table(differing, columns) if differing else "none.",
        ]
    (report / "summary.md").write_text("\n".join(summary) + "\n", encoding="utf-8")
    _tensorboard(report / "tensorboard", sheet, scores, experiment)
    return report


def _write_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _tensorboard(logdir: Path, sheet: Path, scores: list[dict], experiment: Experiment) -> None:
    from PIL import Image
    from torch.utils.tensorboard import SummaryWriter
    from torchvision.transforms.functional import pil_to_tensor

    with SummaryWriter(str(logdir)) as writer:
        writer.add_image(f"{experiment.name}/contact-sheet", pil_to_tensor(Image.open(sheet).convert("RGB")), 0)
        writer.add_text(f"{experiment.name}/summary", (sheet.parent / "summary.md").read_text(encoding="utf-8"))
        for i, model in enumerate(experiment.models):
            overall = next(r for r in scores if r["model"] == model and r["prompt"] == "all")
            writer.add_scalar(f"{experiment.name}/judge_accuracy", overall["judge_accuracy"], i)
            writer.add_scalar(f"{experiment.name}/judge_cosine", overall["judge_cosine"], i)


def run_experiment(experiment: Experiment) -> Path:
    """Invert, score and report one experiment; returns the report directory."""
    run_dirs = invert_all(experiment)
    return write_report(experiment, run_dirs, score(experiment, run_dirs))


def main(args: list[str] | None = None) -> None:
    """Entry point of ``clip-inversion-experiment``: prints the report's ``summary.md`` path."""
    ns = experiment_parser().parse_args(args)
    with exit_on_error("clip-inversion-experiment"):
        experiment = Experiment.from_yaml(ns.config, root=ns.root, seeds=ns.seeds)
        experiment.args = [*experiment.args, *ns.args]
        print(run_experiment(experiment) / "summary.md")


if __name__ == "__main__":
    main()
