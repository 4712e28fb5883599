"""The README's promises to a user, checked by running what it prints.

Every ``clip-inversion fit`` command of the README (and the Makefile's quickstart) runs, shortened to two
steps, into its own directory, and writes what the README's "What a run writes" table says: the images at
the stated size, their snapshots, a manifest line a prompt, ``run.json``, TensorBoard event files and a
checkpoint. The report command writes the page it names, and the Python snippet returns what its comments say.

Commands that name a real CLIP (their weights cannot be downloaded here) run with the bundled toy model
instead; everything else about them is as written. ``clip-inversion-evaluate`` has tests of its own
(test_evaluate.py); the offline real-CLIP path of configs/paper.yaml is tested in test_fidelity.py.
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from pathlib import Path

import pytest
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torchvision.io import decode_image

from clip_inversion.cli import main
from clip_inversion.data import read_prompts
from clip_inversion.gallery import main as report_main

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
STEPS = 2
SHORT = [
    f"--model.steps={STEPS}",
    "--writer.snapshot_steps=[1, 2]",
    "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false",
]
TOY = ["--model.clip.model_name=toy-subject", "--model.clip.pretrained=null"]


def blocks(language: str, text: str = README) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def commands(program: str, page: str = "README.md") -> list[list[str]]:
    """The arguments after ``program`` of every such command in the bash blocks of ``page`` (and, for the
    README, the Makefile's recipes), continuation lines joined, comments and environment assignments dropped,
    each command once (``srun clip-inversion fit`` is a program of its own)."""
    text = "\n".join(blocks("bash", (ROOT / page).read_text()))
    if page == "README.md":
        text += "\n" + "\n".join(
            line.strip() for line in (ROOT / "Makefile").read_text().splitlines() if line[:1] == "\t"
        )
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        words = [w.removeprefix("$(BIN)/") for w in shlex.split(line, comments=True) if not re.match(r"^\w+=", w)]
        if words[: len(program.split())] == program.split() and words[len(program.split()) :] not in found:
            found.append(words[len(program.split()) :])
    return found


FITS = commands("clip-inversion fit")


def options(args: list[str]) -> dict:
    """``--name=value`` options of a command (the last of each name), and its configs under ``--config``."""
    found: dict = {"--config": []}
    for i, arg in enumerate(args):
        if arg == "--config":
            found["--config"].append(args[i + 1])
        elif arg.startswith("--") and "=" in arg:
            name, value = arg.split("=", 1)
            found[name] = value
    return found


def from_configs(args: list[str], section: str, key: str) -> object:
    configs = [yaml.safe_load((ROOT / c).read_text()) for c in options(args)["--config"]]
    return [c[section][key] for c in configs if key in (c.get(section) or {})][-1]


def run_dir_of(args: list[str]) -> str:
    return options(args).get("--trainer.default_root_dir") or from_configs(args, "trainer", "default_root_dir")


def final_resolution(settings: dict, steps: int) -> int:
    """The image size after ``steps`` steps: ``model.init_size``, then each milestone reached."""
    size = settings["model.init_size"]
    for milestones in settings.get("ResolutionSchedule.milestones", []):
        for step, new in sorted((int(k), v) for k, v in milestones.items()):
            size = new if step <= steps else size
    return size


def test_the_readme_shows_its_commands_and_each_runs_into_its_own_directory():
    assert any(options(a)["--config"] == ["configs/quickstart.yaml"] and len(a) == 2 for a in FITS)  # the quickstart
    assert any("configs/paper.yaml" in options(a)["--config"] for a in FITS)  # a real CLIP
    run_dirs = [run_dir_of(args) for args in FITS]
    assert len(set(run_dirs)) == len(run_dirs), run_dirs


def test_the_readme_cluster_command_submits_the_shipped_job_script_with_its_variables():
    """It cannot run here (no SLURM): the script it submits exists, reads the variables the command sets, and
    runs ``clip-inversion fit`` (test_cluster.py runs the script itself)."""
    (line,) = [line for line in "\n".join(blocks("bash")).splitlines() if " sbatch " in line]
    words = shlex.split(line, comments=True)
    variables = [w.split("=")[0] for w in words[: words.index("sbatch")] if w != "HF_HUB_OFFLINE=1"]
    (script,) = [w for w in words if w.endswith(".sbatch")]
    text = (ROOT / script).read_text()
    assert "srun clip-inversion fit" in text and variables
    assert all(f"${{{name}:-" in text for name in variables), variables


GUIDE = commands("clip-inversion fit", "docs/real-clips.md")


@pytest.mark.parametrize("args", GUIDE, ids=[" ".join(a)[:90] for a in GUIDE])
def test_docs_real_clips_commands_resolve(args, monkeypatch, capsys):
    """docs/real-clips.md's commands need a real CLIP and a GPU: each option they give exists and is the
    resolved config's."""
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as printed:
        main(["fit", *args, "--print_config"])
    assert printed.value.code == 0
    resolved = yaml.safe_load(capsys.readouterr().out)
    for name, value in options(args).items():
        if name != "--config":
            section, *keys = name.removeprefix("--").split(".")
            node = resolved[section]
            for key in keys:
                node = node[key]
            assert node == yaml.safe_load(value) or str(node) == value, name


def run_fit(args: list[str], run_dir: Path) -> None:
    given = options(args)
    real_model = any("paper.yaml" in c for c in given["--config"]) or not given.get(
        "--model.clip.model_name", "toy-"
    ).startswith("toy-")
    main(["fit", *args, *SHORT, *(TOY if real_model else []), f"--trainer.default_root_dir={run_dir}"])


def wanted_prompts(args: list[str]) -> list[str]:
    given = options(args)
    if "--data.prompts_file" in given and "--data.prompts" not in given:
        return [p.text for p in read_prompts(given["--data.prompts_file"])]
    if "--data.prompts" in given:
        return yaml.safe_load(given["--data.prompts"])
    return from_configs(args, "data", "prompts")


def check_run_directory(run_dir: Path, prompts: list[str]) -> list[dict]:
    """What the README's table says a run writes, for a run of ``STEPS`` steps with ``SHORT``'s snapshots."""
    settings = json.loads((run_dir / "run.json").read_text())["settings"]  # the settings that shape an image
    assert settings["model.steps"] == STEPS and settings["writer.snapshot_steps"] == [1, 2]
    size = final_resolution(settings, STEPS)

    records = [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]
    assert sorted(r["prompt"] for r in records) == sorted(prompts)  # one line a prompt, no other
    for r in records:
        assert {"id", "model", "models", "seed", "cosine", "tags"} <= r.keys()
        assert r["steps"] == STEPS and r["resolution"] == size
        image = Path(r["image"])
        assert image.parent == Path("images") and image.name.startswith(f"{r['id']}_") and image.suffix == ".png"
        assert decode_image(str(run_dir / image)).shape == (3, size, size)
        snapshots = sorted((run_dir / "snapshots" / image.stem).iterdir())
        assert [s.name for s in snapshots] == ["step-00001.png", "step-00002.png"]
        assert all(decode_image(str(s)).shape[0] == 3 for s in snapshots)

    (events,) = (run_dir / "lightning_logs" / "version_0").glob("events.out.tfevents.*")
    logged = EventAccumulator(str(events))
    logged.Reload()
    tags = logged.Tags()
    assert {f"cosine/{Path(r['image']).stem}" for r in records} <= set(tags["scalars"])  # each prompt's cosine
    assert "train/loss" in tags["scalars"]
    assert tags["images"] and "config/text_summary" in tags["tensors"]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    return records


@pytest.mark.parametrize("args", FITS, ids=[" ".join(a)[:90] for a in FITS])
def test_a_readme_command_writes_what_the_readme_says(args, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    run_dir = tmp_path / run_dir_of(args)
    run_fit(args, run_dir)
    check_run_directory(run_dir, wanted_prompts(args))

    if options(args)["--config"] == ["configs/quickstart.yaml"]:
        # "at the run's final resolution (64 px for the quickstart)", at the quickstart's own steps
        (stated,) = re.findall(r"\((\d+) px for the quickstart\)", README)
        settings = json.loads((run_dir / "run.json").read_text())["settings"]
        assert final_resolution(settings, from_configs(args, "model", "steps")) == int(stated)
        # "clip-inversion-report runs/quickstart  # writes runs/quickstart/report/index.html"
        assert ["runs/quickstart"] in commands("clip-inversion-report")
        report_main([str(run_dir)])
        page = (run_dir / "report" / "index.html").read_text()
        assert all(p in page for p in wanted_prompts(args))


def test_the_readme_python_snippet_returns_images_and_manifest_lines(tmp_path, monkeypatch):
    import clip_inversion.api

    (snippet,) = blocks("python")
    monkeypatch.chdir(tmp_path)  # its run directory is relative; its config is the repository's
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    run = clip_inversion.api.run
    monkeypatch.setattr(clip_inversion.api, "run", lambda args: run([*args, *SHORT]))
    names: dict = {}
    exec(snippet, names)
    (call,) = re.findall(r"invert\((\[.*?\])", snippet)
    prompts = ast.literal_eval(call)
    results = names["results"]
    assert [r.prompt for r in results] == prompts
    records = check_run_directory(Path(re.search(r'run_dir="(.*?)"', snippet).group(1)), prompts)
    assert results[0].record == records[[r["prompt"] for r in records].index(prompts[0])]  # "its manifest line"
    image = results[0].image  # "(3, H, W) tensor in [0, 1]"
    assert image.ndim == 3 and image.shape[0] == 3 and image.min() >= 0 and image.max() <= 1
