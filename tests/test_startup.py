"""Start-up: a finished command answers from ``finished.json`` without torch; the thread count needs no wait."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clip_inversion import rundir, usage
from clip_inversion.cli import idle_cores, main

CONFIGS = Path(__file__).parents[1] / "configs"
PROMPTS = ["a red star", "a blue cross"]


@pytest.fixture
def finished_run(tmp_path: Path) -> tuple[list[str], Path]:
    """A command line (its own config and prompts file) whose two prompts are finished, and its run directory."""
    config, prompts = tmp_path / "recipe.yaml", tmp_path / "prompts.txt"
    config.write_text((CONFIGS / "quickstart.yaml").read_text())
    prompts.write_text("".join(p + "\n" for p in PROMPTS))
    run_dir = tmp_path / "run"
    command = ["fit", "--config", str(config), f"--data.prompts_file={prompts}", "--model.steps=2"]
    command += ["--trainer.default_root_dir", str(run_dir), "--trainer.enable_progress_bar=false"]
    main(command)
    return command, run_dir


def test_a_finished_command_answers_without_importing_torch(finished_run):
    command, run_dir = finished_run
    script = "import sys; from clip_inversion.usage import main; main(sys.argv[1:]); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, check=True)
    assert out.stderr.strip() == f"clip-inversion: Nothing left to do: 2 of 2 prompts finished in {run_dir}"
    assert out.stdout.strip() == "False"


def change_prompts(command: list[str], run_dir: Path) -> list[str]:
    prompts = Path(command[3].split("=", 1)[1])
    prompts.write_text(prompts.read_text() + "a green circle\n")
    return command


def change_config(command: list[str], run_dir: Path) -> list[str]:
    config = Path(command[2])
    config.write_text(config.read_text().replace("steps: 200", "steps: 199"))
    return command


def delete_an_image(command: list[str], run_dir: Path) -> list[str]:
    next((run_dir / "images").iterdir()).unlink()
    return command


def cut_the_manifest(command: list[str], run_dir: Path) -> list[str]:
    manifest = run_dir / rundir.MANIFEST
    manifest.write_text(manifest.read_text().splitlines(keepends=True)[0])
    return command


def change_run_json(command: list[str], run_dir: Path) -> list[str]:
    settings = run_dir / rundir.RUN_FILE
    settings.write_text(settings.read_text().replace('"model.steps": 2', '"model.steps": 3'))
    return command


def another_option(command: list[str], run_dir: Path) -> list[str]:
    return [*command, "--model.tv=0.5"]


def fresh(command: list[str], run_dir: Path) -> list[str]:
    main([*command, "--fresh"])  # finished too, and recorded: --fresh asks for it again all the same
    return [*command, "--fresh"]


def another_directory(command: list[str], run_dir: Path) -> list[str]:
    os.chdir(run_dir)  # relative paths would name other files
    return command


def other_code(command: list[str], run_dir: Path) -> list[str]:
    rundir._code_version = lambda: "another clip-inversion"  # undone by the fixture's monkeypatch
    return command


@pytest.mark.parametrize(
    "change",
    [change_prompts, change_config, delete_an_image, cut_the_manifest, change_run_json, another_option, fresh,
     another_directory, other_code],
)  # fmt: skip
def test_anything_the_answer_depends_on_sends_the_command_the_whole_way(finished_run, change, monkeypatch):
    command, run_dir = finished_run
    monkeypatch.chdir(Path.cwd())
    monkeypatch.setattr(rundir, "_code_version", rundir._code_version)
    assert usage.answer_finished(command)
    assert not usage.answer_finished(change(command, run_dir))


def test_the_whole_way_writes_the_answer_again(finished_run, capsys):
    command, run_dir = finished_run
    (run_dir / rundir.FINISHED).unlink()
    assert not usage.answer_finished(command)
    main(command)  # nothing to do: said the slow way, and recorded
    assert "Nothing left to do: 2 of 2" in capsys.readouterr().err
    assert usage.answer_finished(command)
    assert json.loads((run_dir / rundir.FINISHED).read_text())["prompts"] == 2


def test_an_unfinished_run_is_not_answered(tmp_path):
    command = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--data.prompts=[a red star, a blue cross]"]
    command += ["--model.steps=2", "--data.batch_size=1", f"--trainer.default_root_dir={tmp_path}"]
    command += ["--trainer.enable_progress_bar=false", "--trainer.max_steps=2"]  # the first prompt only
    main(command)
    assert len(rundir.read_records(tmp_path)) == 1
    assert not (tmp_path / rundir.FINISHED).exists() and not usage.answer_finished(command)


def test_the_run_directory_is_read_off_the_command_line_as_the_cli_resolves_it(tmp_path):
    other = tmp_path / "other.yaml"
    other.write_text("trainer:\n  default_root_dir: runs/other\n")
    quickstart = str(CONFIGS / "quickstart.yaml")
    assert usage.named_run_dir(["fit"]) == "runs/clip-inversion"
    assert usage.named_run_dir(["fit", "--config", quickstart]) == "runs/quickstart"
    assert usage.named_run_dir(["fit", "-c", quickstart, f"--config={other}"]) == "runs/other"
    assert usage.named_run_dir(["fit", "--config", str(other), "-c", quickstart]) == "runs/quickstart"
    named = ["fit", "--trainer.default_root_dir=a/", "--config", str(other), "--trainer.default_root_dir", "b/./c"]
    assert usage.named_run_dir(named) == "b/c"


def proc_stat(*busy_idle: tuple[int, int]) -> str:
    return "\n".join(f"cpu{i} {busy} 0 0 {idle} 0 0 0 0 0 0" for i, (busy, idle) in enumerate(busy_idle)) + "\n"


def test_the_thread_count_reads_the_load_over_the_imports_less_its_own_work(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(time, "sleep", lambda s: pytest.fail("waited, with a window to hand"))
    start = proc_stat((0, 0), (0, 0))
    # over the window one core was busy: this process's own imports (about one core's worth), nobody else
    since = (time.monotonic() - 2.0, time.process_time() - 2.0, start)
    assert idle_cores(lambda: proc_stat((100, 0), (0, 100)), since=since) == 2
    # both cores busy: another process held the other one
    assert idle_cores(lambda: proc_stat((100, 0), (100, 0)), since=since) == 1
    # the same reading over a window in which this process did nothing: another process held a core
    idle_since = (time.monotonic() - 2.0, time.process_time(), start)
    assert idle_cores(lambda: proc_stat((100, 0), (0, 100)), since=idle_since) == 1
