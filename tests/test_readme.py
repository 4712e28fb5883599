"""Every ``clip-inversion fit`` command of the README (and the Makefile's quickstart) runs, shortened to two
steps, into its own directory, and does what its text says: the prompts it names, the settings it names.

Commands that name a real CLIP (their weights cannot be downloaded here) run with the bundled toy model
instead; everything else about them is as written. The other commands of the README have tests of their own
(``clip-inversion-experiment`` in test_experiment.py, ``clip-inversion-train-toy`` in test_toy_training.py).
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from clip_inversion.cli import main
from clip_inversion.data import read_prompts

ROOT = Path(__file__).parents[1]
SHORT = ["--model.steps=2", "--trainer.enable_progress_bar=false", "--trainer.logger=false"]
TOY = ["--model.clip.model_name=toy-subject", "--model.clip.pretrained=null"]


def fit_commands() -> list[list[str]]:
    """The arguments after ``clip-inversion fit`` of every such command in the README's bash blocks and the
    Makefile's recipes, continuation lines joined and comments dropped."""
    readme = "\n".join(re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL))
    makefile = "\n".join(line.strip() for line in (ROOT / "Makefile").read_text().splitlines() if line[:1] == "\t")
    commands = []
    for line in (readme + "\n" + makefile).replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:2] in (["clip-inversion", "fit"], ["$(BIN)/clip-inversion", "fit"]):
            commands.append(words[2:])
    return commands


COMMANDS = fit_commands()


def options(args: list[str]) -> dict[str, str]:
    """``--name=value`` options of a command (the last of each name), and its configs under ``--config``."""
    found: dict[str, str] = {"--config": []}
    for i, arg in enumerate(args):
        if arg == "--config":
            found["--config"].append(args[i + 1])
        elif arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            found[name] = value
    return found


def run_dir_of(args: list[str]) -> str:
    given = options(args)
    if "--trainer.default_root_dir" in given:
        return given["--trainer.default_root_dir"]
    configs = [yaml.safe_load((ROOT / c).read_text()) for c in given["--config"]]
    return [c["trainer"]["default_root_dir"] for c in configs if "default_root_dir" in c.get("trainer", {})][-1]


def test_the_readme_shows_its_commands_and_each_runs_into_its_own_directory():
    assert len(COMMANDS) >= 6
    run_dirs = [run_dir_of(args) for args in COMMANDS]
    assert len(set(run_dirs)) == len(run_dirs), run_dirs


def contains(actual: object, wanted: object) -> bool:
    """``wanted`` as given on the command line is ``actual`` as resolved (dicts may hold more keys)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(contains(actual.get(k), v) for k, v in wanted.items())
    if isinstance(wanted, list):
        return isinstance(actual, list) and len(actual) == len(wanted) and all(map(contains, actual, wanted))
    return actual == wanted


@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a)[:90] for a in COMMANDS])
def test_a_readme_command_does_what_it_says(args, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    given = options(args)
    real_model = any("paper.yaml" in c for c in given["--config"]) or not given.get(
        "--model.clip.model_name", "toy-"
    ).startswith("toy-")
    run_dir = tmp_path / run_dir_of(args)
    main(["fit", *args, *SHORT, *(TOY if real_model else []), f"--trainer.default_root_dir={run_dir}"])

    records = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    if "--data.prompts_file" in given and "--data.prompts" not in given:
        wanted = [p.text for p in read_prompts(given["--data.prompts_file"])]
    elif "--data.prompts" in given:
        wanted = yaml.safe_load(given["--data.prompts"])
    else:
        configs = [yaml.safe_load((ROOT / c).read_text()) for c in given["--config"]]
        wanted = [c["data"]["prompts"] for c in configs if "prompts" in c.get("data", {})][-1]
    assert sorted(r["prompt"] for r in records) == sorted(wanted)  # its prompts, each once, no other
    assert all((run_dir / r["image"]).is_file() for r in records)

    settings = json.loads((run_dir / "run.json").read_text())["settings"]
    resolved = {key.replace(".init_args", ""): value for key, value in settings.items()}
    for name, value in given.items():  # every model option the command gives is the run's
        if name.startswith("--model.") and not (real_model and name.startswith("--model.clip.")):
            key = name.removeprefix("--")
            assert key in resolved or f"{key}.class_path" in resolved, key
            assert contains(resolved.get(key, resolved.get(f"{key}.class_path")), yaml.safe_load(value)), key
    if "--model.ensemble" in given:
        members = [member["model_name"] for member in yaml.safe_load(given["--model.ensemble"])]
        assert [m["model"] for m in records[0]["models"]][1:] == members
