import csv
import sys
from pathlib import Path

import open_clip
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clip_inversion.core.clip import BUNDLED
from clip_inversion.data import read_prompts
from clip_inversion.studies.experiment import Experiment, main, run_experiment

ROOT = Path(__file__).parents[1]
BLEND = "a red star | a blue circle:0.5"


def read_csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.read_text().splitlines()))


def test_an_experiment_inverts_scores_probes_and_reports(tmp_path, capsys):
    experiment = tmp_path / "tiny.yaml"
    experiment.write_text(
        "name: tiny\n"
        "models: [toy-subject, toy-judge]\n"
        "prompts: [a red star, a blue circle, 'a red star | a blue circle:0.5']\n"
        "seeds: 2\n"
        f"configs: [{ROOT / 'configs' / 'quickstart.yaml'}]\n"
        "args: [--model.steps=3, --data.batch_size=4, --trainer.enable_progress_bar=false, --trainer.logger=false]\n"
        f"attributes: [{ROOT / 'configs' / 'attributes' / 'colour.yaml'}]\n"
        "control: toy-subject\n"
    )
    report = tmp_path / "run" / "report"
    with pytest.raises(SystemExit) as done:  # as the console script calls it: a clean exit, status 0
        sys.exit(main(["--config", str(experiment), "--root", str(tmp_path / "run")]))
    assert done.value.code is None
    assert capsys.readouterr().out.strip().endswith(str(report / "summary.md"))
    scores = read_csv(report / "scores.csv")
    assert [(r["model"], r["prompt"]) for r in scores] == [
        (m, p) for m in ("toy-subject", "toy-judge") for p in ("a red star", "a blue circle", BLEND, "all")
    ]
    assert all(int(r["images"]) == (6 if r["prompt"] == "all" else 2) for r in scores)
    assert all(0 <= float(r["judge_accuracy"]) <= 1 for r in scores)
    probes = read_csv(report / "probes.csv")
    assert len(probes) == 2 * 4 * 6  # models x (prompts + all) x colours
    star = [r for r in probes if r["model"] == "toy-subject" and r["prompt"] == "a red star"]
    assert sum(int(r["count"]) for r in star) == 2  # every image has exactly one colour
    comparisons = read_csv(report / "comparisons.csv")
    components = read_csv(report / "components.csv")  # the blend's two terms, for each model
    assert [(r["model"], r["term"], r["weight"]) for r in components] == [
        (m, t, w) for m in ("toy-subject", "toy-judge") for t, w in (("a red star", "1.0"), ("a blue circle", "0.5"))
    ]
    assert all(float(a["closest"]) + float(b["closest"]) == 1 for a, b in zip(components[::2], components[1::2]))
    assert len(comparisons) == 4 * 6 and {r["model"] for r in comparisons} == {"toy-judge"}
    summary = (report / "summary.md").read_text()
    assert "## Against the control (toy-subject)" in summary and "## Composite prompts" in summary
    assert "| toy-judge | a red star \\| a blue circle:0.5 | 2 | a blue circle | 0.5 |" in summary  # one cell
    assert "## Attribute probes" in summary and "| toy-judge | a blue circle | 2 |" in summary
    width, height = Image.open(report / "contact-sheet.png").size
    labels = 8 + 6 * len(BLEND)  # wide enough for the longest prompt
    assert height == 16 + 6 * 64 and width == labels + 2 * 64  # (model, prompt) rows x seed columns
    (events,) = (report / "tensorboard").glob("events.out.tfevents.*")
    tags = EventAccumulator(str(events)).Reload().Tags()
    assert tags["images"] == ["tiny/contact-sheet"] and "tiny/judge_accuracy" in tags["scalars"]
    main(["--config", str(experiment), "--root", str(tmp_path / "run")])  # resumes: nothing to redo
    assert read_csv(report / "scores.csv") == scores


def test_shipped_experiments_name_real_files_models_and_tags():
    paths = sorted((ROOT / "configs" / "experiments").glob("*.yaml"))
    assert {"planted-bias", "data-scale", "paper-gender"} <= {p.stem for p in paths}
    for path in paths:
        experiment = Experiment.from_yaml(path)
        assert all((ROOT / a).is_file() for a in experiment.attributes + experiment.configs), path.name
        if experiment.candidates:  # the judge classifies among them: every prompt must be one
            assert set(experiment.prompts) <= {p.text for p in read_prompts(ROOT / experiment.candidates)}
        for model in [*experiment.models, f"{experiment.judge}@{experiment.judge_pretrained or ''}"]:
            name, _, tag = model.partition("@")
            known = name in BUNDLED or name.startswith("local-dir:")
            assert known or tag in open_clip.list_pretrained_tags_by_model(name), (path.name, model)


def test_the_planted_bias_experiment_finds_the_strict_bias_and_not_in_the_control(tmp_path):
    # The shipped experiment, shortened: "a circle" with the model that only ever saw purple circles, and the control.
    experiment = Experiment.from_yaml("configs/experiments/planted-bias.yaml", seeds=6, root=str(tmp_path))
    experiment.models, experiment.prompts = ["toy-strict-biased-subject", "toy-control-subject"], ["a circle"]
    experiment.args += ["--model.steps=60", "--trainer.logger=false"]
    report = run_experiment(experiment)

    def rows(name: str) -> list[dict]:
        key = ("a circle", "colour", "purple")
        return [row for row in read_csv(report / name) if (row["prompt"], row["attribute"], row["class"]) == key]

    purple = {row["model"]: row for row in rows("probes.csv")}
    assert purple["toy-strict-biased-subject"]["above_chance"] == "True"
    assert purple["toy-control-subject"]["above_chance"] == "False"
    (difference,) = rows("comparisons.csv")
    assert difference["differs"] == "True" and float(difference["low"]) > 0
