"""The user's path: ``clip-inversion fit --config configs/...yaml`` through ``main``."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import kornia.augmentation as K
import pytest
import torch
import yaml
from lightning.pytorch.cli import LightningCLI
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clip_inversion.cli import main, run

CONFIGS = Path(__file__).parents[1] / "configs"


def test_quickstart_config_runs_end_to_end(tmp_path):
    faster = tmp_path / "faster.yaml"  # a second config composes with the first: an earlier upsample
    faster.write_text(
        "trainer:\n  callbacks:\n"
        "    - class_path: clip_inversion.callbacks.ResolutionSchedule\n      init_args: {milestones: {4: 48}}\n"
        "    - class_path: clip_inversion.callbacks.ProgressImages\n      init_args: {every_n_steps: 3}\n"
    )
    cli = run(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--config",
            str(faster),
            "--model.steps=6",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--data.prompts=[a red circle, a blue star, a green square]",
            "--data.batch_size=2",
        ]
    )
    assert cli.trainer.global_step == 12  # two batches of prompts, 6 steps each (data.steps follows model.steps)
    lines = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in lines] == ["a red circle", "a blue star", "a green square"]
    for record in lines:
        assert (tmp_path / record["image"]).is_file()
        assert record["model"] == "toy-subject" and record["steps"] == 6 and record["resolution"] == 48
        assert -1 <= record["cosine"] <= 1
    assert record["models"] == [{"model": "toy-subject", "weight": 1.0, "random_weights": False}]
    (events,) = (tmp_path / "lightning_logs" / "version_0").glob("events.out.tfevents.*")
    logged = EventAccumulator(str(events), size_guidance={"images": 0}).Reload()
    tags = logged.Tags()
    assert {"progress/epoch-0000", "progress/epoch-0001"} <= set(tags["images"])
    grid = logged.Images("progress/epoch-0000")[-1]
    assert grid.height > grid.width / 2  # two 48 px images, each scaled to 128 px wide, with its label below
    assert "train/loss" in tags["scalars"] and "cosine/00000_a-red-circle" in tags["scalars"]
    assert "config" in " ".join(tags["tensors"])  # the config, as text
    # HParams: the prompts and the recipe beside the run's real score (the mean final cosine, not a placeholder)
    (hp_cosine,) = logged.Scalars("hp/cosine")
    assert hp_cosine.value == pytest.approx(sum(r["cosine"] for r in lines) / 3, abs=1e-6)
    assert "hp_metric" not in tags["scalars"]
    hparams = hparams_of(events)
    assert "a blue star" in hparams["data.prompts"].string_value and hparams["model.steps"].number_value == 6


def hparams_of(events: Path) -> dict:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    for event in EventFileLoader(str(events)).Load():
        for value in event.summary.value:
            if value.tag == "_hparams_/session_start_info":
                return dict(HParamsPluginData.FromString(value.metadata.plugin_data.content).session_start_info.hparams)
    raise AssertionError("no hyperparameters logged")


def test_prompts_file_is_read(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# colours\na yellow star\n\nan orange cross\n", encoding="utf-8")
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--model.steps=2",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
            "--data.prompts=null",
            f"--data.prompts_file={prompts}",
        ]
    )
    lines = (tmp_path / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["prompt"] for line in lines] == ["a yellow star", "an orange cross"]


def print_config(*args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "clip_inversion", "fit", *args, "--print_config"],
        capture_output=True,
        text=True,
        check=True,
    )
    return yaml.safe_load(result.stdout)


def test_paper_config_resolves_to_the_reference_recipe():
    config = print_config("--config", str(CONFIGS / "paper.yaml"))
    model = config["model"]
    assert model["clip"]["model_name"] == "ViT-B-16" and model["clip"]["pretrained"] == "openai"
    assert (model["steps"], model["init_size"], model["copies"]) == (3400, 64, 13)
    assert (model["tv"], model["l1"], model["grad_clip"], model["distance"]) == (0.005, 0.0, 1.0, "l2")
    assert model["optimizer"]["class_path"] == "torch.optim.Adam" and model["optimizer"]["init_args"]["lr"] == 0.1
    (affine,) = model["augmentations"]
    assert affine["class_path"] == "kornia.augmentation.RandomAffine"
    args = affine["init_args"]
    assert (args["degrees"], args["translate"], args["scale"], args["p"], args["padding_mode"]) == (
        30,
        [0.1, 0.1],
        [0.7, 1.2],
        0.5,
        "border",
    )
    (schedule,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("ResolutionSchedule")]
    assert {int(k): v for k, v in schedule["init_args"]["milestones"].items()} == {900: 128, 1800: 224}


def test_model_can_be_chosen_on_the_command_line():
    config = print_config(
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        "--model.clip.model_name=ViT-B-16",
        "--model.clip.pretrained=openai",
    )
    assert config["model"]["clip"]["model_name"] == "ViT-B-16" and config["model"]["clip"]["pretrained"] == "openai"


@pytest.mark.parametrize("name", ["ViT-B-61", "toy-subjet"])
def test_unknown_model_suggests_close_names(name):
    from clip_inversion.core.clip import CLIPLoadError, CLIPSpec, load_clip

    with pytest.raises(CLIPLoadError, match="Did you mean"):
        load_clip(CLIPSpec(name))


def test_weights_that_cannot_be_downloaded_fail_fast_with_advice(tmp_path, monkeypatch):
    import clip_inversion.core.clip as clip

    monkeypatch.setattr(clip, "_hub_reachable", lambda timeout=3.0: False)  # as on a machine without internet
    with pytest.raises(clip.CLIPLoadError) as error:
        clip.load_clip(clip.CLIPSpec("RN50", "openai", cache_dir=str(tmp_path)))
    message = str(error.value)
    assert "--model.clip.cache_dir" in message and "HF_HUB_OFFLINE" in message and "--model.clip.pretrained" in message


def test_unknown_tag_lists_the_known_ones():
    from clip_inversion.core.clip import CLIPLoadError, CLIPSpec, load_clip

    with pytest.raises(CLIPLoadError, match="laion2b"):
        load_clip(CLIPSpec("ViT-B-16", "no-such-tag"))


def test_a_bad_prompts_file_fails_before_the_model_loads(tmp_path, monkeypatch):
    import clip_inversion.module

    def no_loading(spec):
        raise AssertionError("the model was loaded before the prompts were checked")

    monkeypatch.setattr(clip_inversion.module, "load_clip", no_loading)
    with pytest.raises(ValueError, match="not found"):
        run(["fit", "--config", str(CONFIGS / "quickstart.yaml"), f"--data.prompts_file={tmp_path / 'none.txt'}"])


def test_hf_hub_model_offline_fails_with_advice(monkeypatch, tmp_path):
    import clip_inversion.core.clip as clip

    monkeypatch.setattr(clip, "_hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(clip.CLIPLoadError, match="HF_HUB_OFFLINE"):
        clip.load_clip(clip.CLIPSpec("hf-hub:someone/some-clip", cache_dir=str(tmp_path)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data.prompts_file=/no/such/file.txt"], "prompts file not found: /no/such/file.txt"),
        (["--model.clip.model_name=ViT-B-61"], "unknown model name 'ViT-B-61'"),
        (["--model.steps=0"], "--model.steps must be at least 1"),
        (["--model.copies=0"], "--model.copies must be at least 1"),
        (["--data.prompts=[a red star, '  ']"], "prompt 1 of --data.prompts is empty"),
    ],
)
def test_bad_input_prints_one_line_and_exits_2(args, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(CONFIGS / "quickstart.yaml"), *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("clip-inversion: error: ") and message in err[-1]
    assert not any("Traceback" in line for line in err)


def test_shipped_sweep_configs_name_real_models_and_tags():
    import open_clip

    from clip_inversion.core.clip import BUNDLED

    for path in (CONFIGS / "sweeps").glob("*.yaml"):
        for model in yaml.safe_load(path.read_text())["sweep"]["models"]:
            name, _, tag = model.partition("@")
            assert name in BUNDLED or tag in open_clip.list_pretrained_tags_by_model(name), (path.name, model)


def quickstart_with(tmp_path: Path, *configs: str) -> LightningCLI:
    """The quickstart, then ``configs`` (paths under configs/), run for 2 steps on one prompt."""
    more = [arg for config in configs for arg in ("--config", str(CONFIGS / config))]
    return run(
        [
            "fit",
            *("--config", str(CONFIGS / "quickstart.yaml"), *more),
            "--model.steps=2",
            "--data.prompts=[a red star]",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )


# The quickstart holds every augmentation of configs/augment/all.yaml, which composes over any other config.
@pytest.mark.parametrize("configs", [[], ["augment/affine-8.yaml", "augment/all.yaml"]], ids=["quickstart", "all"])
def test_every_augmentation_can_be_switched_on_from_yaml(tmp_path, configs):
    cli = quickstart_with(tmp_path, *configs)
    assert cli.model.augment.copies == (32 if not configs else 8)
    names = [type(t).__name__ for t in cli.model.augment.transforms]
    assert names == [
        "RandomAffine",
        "RandomResizedCrop",
        "RandomHorizontalFlip",
        "ColorJitter",
        "RandomColorShift",
        "RandomGaussianNoise",
    ]
    assert [t.p for t in cli.model.augment.transforms] == [0.5, 1.0, 0.5, 0.5, 0.5, 0.5]
    assert (tmp_path / "manifest.jsonl").is_file()


def test_fast_settings_over_every_augmentation_say_the_warp_is_not_fused(tmp_path, caplog):
    cli = quickstart_with(tmp_path, "fast.yaml")
    assert cli.model.hparams.fused_warp and not cli.model.inverter.fused
    assert "--model.fused_warp=true fuses a lone RandomAffine" in caplog.text
    assert (tmp_path / "manifest.jsonl").is_file()


def test_affine_8_gives_back_the_quickstart_before_issue_17(tmp_path):
    cli = quickstart_with(tmp_path, "augment/affine-8.yaml")
    (affine,) = cli.model.augment.transforms  # the reference affine alone
    assert isinstance(affine, K.RandomAffine) and affine.p == 0.5 and cli.model.augment.copies == 8
    assert cli.model.hparams.tv == 0.087 and cli.model.hparams.steps == 2


def test_out_of_memory_names_the_settings_to_lower(tmp_path, monkeypatch, capsys):
    from clip_inversion.core.clip import FrozenCLIP

    def out_of_memory(self, images):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(FrozenCLIP, "encode_image", out_of_memory)
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "fit",
                "--config",
                str(CONFIGS / "quickstart.yaml"),
                "--trainer.logger=false",
                "--model.steps=2",
                f"--trainer.default_root_dir={tmp_path}",
            ]
        )
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("clip-inversion: error: out of cpu memory inverting 6 prompts x 32 copies")
    assert "--data.batch_size (now 6)" in err and "--model.copies (now 32)" in err


def test_fast_settings_run_and_log_only_on_logging_steps(tmp_path, monkeypatch):
    from clip_inversion.module import CLIPInversion

    monkeypatch.setattr("clip_inversion.precision.cpu_flags", lambda: {"amx_bf16"})  # bf16 as on a CPU made for it
    logged = []
    original = CLIPInversion.log
    monkeypatch.setattr(
        CLIPInversion, "log", lambda self, name, *a, **k: (logged.append(name), original(self, name, *a, **k))
    )
    cli = run(
        [
            "fit",
            "--config",
            str(CONFIGS / "quickstart.yaml"),
            "--config",
            str(CONFIGS / "augment" / "affine-8.yaml"),  # the fused warp needs the lone affine
            "--config",
            str(CONFIGS / "fast.yaml"),
            "--model.steps=7",
            "--trainer.log_every_n_steps=3",
            "--data.prompts=[a red circle, a blue star]",
            f"--trainer.default_root_dir={tmp_path}",
            "--trainer.enable_progress_bar=false",
        ]
    )
    # steps 3 and 6 (the logger's) and 7 (the last), one value a term; the cosine callback logs its own
    assert logged.count("train/loss") == 3 and logged.count("train/distance") == 3
    assert cli.trainer.logged_metrics["train/loss"].dtype == torch.float32  # the objective stays fp32 in bf16
    assert cli.model.hparams.fused_warp and cli.model.augment.fusable and cli.trainer.precision == "bf16-mixed"
    assert (tmp_path / "manifest.jsonl").is_file()


def test_prompts_on_the_command_line_replace_the_configs(tmp_path, capsys):
    prompts = [f"a {c} {s}" for c in ("red", "blue", "green", "yellow") for s in ("star", "circle", "cross")]
    prompts_file = tmp_path / "prompts.txt"
    prompts_file.write_text("\n".join(prompts) + "\n")
    common = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--model.steps=1", "--data.batch_size=12"]
    common += ["--trainer.enable_progress_bar=false", "--trainer.logger=false"]

    def inverted(run_dir: Path, *args: str) -> list[str]:
        main([*common, f"--trainer.default_root_dir={run_dir}", *args])
        return [json.loads(line)["prompt"] for line in (run_dir / "manifest.jsonl").read_text().splitlines()]

    # the quickstart config holds six prompts of its own: none of them is inverted
    assert sorted(inverted(tmp_path / "file", f"--data.prompts_file={prompts_file}")) == sorted(prompts)
    assert inverted(tmp_path / "inline", "--data.prompts=[a purple star]") == ["a purple star"]
    both = inverted(tmp_path / "both", "--data.prompts=[a purple star]", f"--data.prompts_file={prompts_file}")
    assert sorted(both) == sorted(["a purple star", *prompts])


def test_a_run_directory_resumes_its_own_settings_and_refuses_others(tmp_path, capsys):
    run_dir = tmp_path / "run"
    command = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--data.prompts=[a red star, a blue cross]"]
    command += [f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false", "--model.steps=2"]
    main(command)
    assert f"2 of 2 prompts finished in {run_dir}" in capsys.readouterr().err
    manifest = (run_dir / "manifest.jsonl").read_bytes()
    images = {p: p.stat().st_mtime_ns for p in (run_dir / "images").iterdir()}
    versions = sorted((run_dir / "lightning_logs").iterdir())

    main(command)  # the same command again: nothing to do, and it says so
    said = capsys.readouterr().err.strip()
    assert said == f"clip-inversion: Nothing left to do: 2 of 2 prompts finished in {run_dir}"

    with pytest.raises(SystemExit) as exit_:  # another setting in the same directory: refused, nothing touched
        main([*command, "--model.steps=3", "--model.tv=0.5"])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"clip-inversion: error: {run_dir} holds results made with other settings")
    assert "model.steps 2 -> 3" in line and re.search(r"model\.tv [0-9.]+ -> 0\.5", line)
    assert "--trainer.default_root_dir" in line and "--fresh" in line
    assert (run_dir / "manifest.jsonl").read_bytes() == manifest
    assert {p: p.stat().st_mtime_ns for p in (run_dir / "images").iterdir()} == images
    assert sorted((run_dir / "lightning_logs").iterdir()) == versions

    main([*command, "--model.steps=3", "--fresh"])  # the explicit way to start it again
    assert [json.loads(line)["steps"] for line in (run_dir / "manifest.jsonl").read_text().splitlines()] == [3, 3]
    assert json.loads((run_dir / "run.json").read_text())["settings"]["model.steps"] == 3


@pytest.mark.parametrize("writer", ["--writer.minmax=true", "--writer.snapshot_steps=[1]", "--writer.nsfw=score"])
def test_a_run_directory_refuses_another_writer_setting(tmp_path, capsys, writer):
    command = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--data.prompts=[a red star]", "--model.steps=2"]
    command += [f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    main(command)
    manifest = (tmp_path / "manifest.jsonl").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:  # one manifest never mixes two ways of writing images
        main([*command, "--data.prompts=[a blue cross]", writer])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert f"{tmp_path} holds results made with other settings (writer." in line
    assert writer.split("=")[0].removeprefix("--") in line
    assert (tmp_path / "manifest.jsonl").read_bytes() == manifest


def test_the_manifest_marks_models_with_random_weights():
    from clip_inversion.core.clip import CLIPSpec

    assert CLIPSpec("ViT-B-16").random_weights  # an architecture alone: random
    assert not CLIPSpec("ViT-B-16", "openai").random_weights and not CLIPSpec("toy-subject").random_weights
    assert not CLIPSpec("local-dir:/some/where").random_weights


def help_text(*args: str) -> str:
    return subprocess.run([sys.executable, "-m", "clip_inversion", *args], capture_output=True, text=True).stdout


def test_help_says_what_the_tool_does_and_lists_the_options_a_run_changes():
    top = help_text("--help")
    assert top.startswith("usage: clip-inversion [-h] {fit}") and "validate" not in top and "predict" not in top
    assert "Invert a frozen CLIP model" in top.splitlines()[2] and "Lightning" not in top
    short = help_text("fit", "--help")
    assert short.startswith("usage: clip-inversion fit ") and len(short.splitlines()) <= 40
    options = re.findall(r"^ +(?:-c, )?(--[a-z_.]+)", short, flags=re.MULTILINE)
    wanted = ["--config", "--model.clip.model_name", "--model.clip.pretrained", "--data.prompts", "--data.prompts_file"]
    wanted += ["--model.steps", "--model.init_size", "--model.copies", "--model.augmentations", "--model.tv"]
    assert {*wanted, "--trainer.default_root_dir", "--trainer.devices"} <= set(options)
    assert "--help=full" in short
    full = help_text("fit", "--help=full")  # every option, from the full parser
    lines = full.splitlines()
    assert lines[0].startswith("usage: clip-inversion "), lines[0]  # the program's name, even under python -m
    assert len(lines) < 800, len(lines)  # every torch.nn.Module under --model.augmentations made it 2,400
    assert any("kornia.augmentation.RandomAffine" in line for line in lines)  # augmentations by example
    assert "Invert a frozen CLIP model" in help_text("--help-all") and "Lightning Trainer" not in full


def test_the_console_script_is_the_entry_point_with_the_short_help():
    import tomllib

    scripts = tomllib.loads((CONFIGS.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["clip-inversion"] == "clip_inversion.usage:main"  # as python -m clip_inversion


@pytest.mark.parametrize(
    "script",
    ["clip-inversion", "clip-inversion-sweep", "clip-inversion-experiment", "clip-inversion-evaluate",
     "clip-inversion-report", "clip-inversion-train-toy"],
)  # fmt: skip
def test_every_command_answers_help_without_importing_torch(script):
    import tomllib

    scripts = tomllib.loads((CONFIGS.parent / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts[script].partition(":")
    code = f"import sys; from {module} import {function} as entry; entry(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith(f"usage: {script} ") and out.splitlines()[-1] == "False", out
    assert "--help" in out and len(out.splitlines()) > 5


def test_every_option_of_the_short_help_is_one_of_the_parser(tmp_path, capsys):
    from clip_inversion.usage import FIT_HELP

    values = {"--data.prompts": "[a blue star]", "--data.prompts_file": "p.txt", "--model.clip.model_name": "toy-judge"}
    values |= {
        "--model.clip.pretrained": "w.pt",
        "--model.steps": "7",
        "--model.init_size": "40",
        "--model.copies": "3",
    }
    values |= {"--model.augmentations": "[]", "--model.tv": "0.25", "--trainer.default_root_dir": str(tmp_path)}
    values |= {"--trainer.devices": "3", "--writer.snapshot_steps": "[5]", "--fresh": None, "--ckpt_path": "last"}
    options = re.findall(r"^ +(?:-c, )?(--[a-z_.]+)", FIT_HELP, flags=re.MULTILINE)
    assert sorted(set(options) - {"--config", "--print_config"}) == sorted(values)
    args = [
        "fit",
        "--config",
        str(CONFIGS / "quickstart.yaml"),
        *(o if v is None else f"{o}={v}" for o, v in values.items()),
    ]
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--print_config"])
    assert exit_.value.code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["clip"] == {**config["model"]["clip"], "model_name": "toy-judge", "pretrained": "w.pt"}
    assert (config["model"]["steps"], config["model"]["init_size"], config["model"]["copies"]) == (7, 40, 3)
    assert (config["model"]["augmentations"], config["model"]["tv"]) == ([], 0.25)
    assert config["data"]["prompts"] == ["a blue star"] and config["data"]["prompts_file"] == "p.txt"
    assert (config["trainer"]["default_root_dir"], config["trainer"]["devices"]) == (str(tmp_path), "3")
    assert (config["writer"]["snapshot_steps"], config["fresh"], config["ckpt_path"]) == ([5], True, "last")


def proc_stat(*cores: tuple[int, int]) -> str:
    """The text of /proc/stat with each core's (busy, idle) ticks, busy split over user and system."""
    lines = [f"cpu{i} {busy - busy // 3} 0 {busy // 3} {idle} 0 0 0 0 0 0" for i, (busy, idle) in enumerate(cores)]
    return "cpu  1 2 3 4 5 6 7 8 0 0\n" + "\n".join(lines) + "\nintr 12 3\nctxt 99\n\n"


def test_a_cpu_run_uses_the_idle_cores_unless_told(monkeypatch):
    import os

    from clip_inversion.cli import idle_cores

    def cores(*readings: str) -> int:
        return idle_cores(iter(readings).__next__, window=0)

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.6, 0.0, 0.0), raising=False)  # a run that just ended, say
    start = proc_stat((1000, 5000), (2000, 4000), (0, 0))
    assert cores(start, proc_stat((1001, 5099), (2002, 4098), (100, 0))) == 2  # idle now, core 2 not ours
    assert cores(start, proc_stat((1100, 5000), (2050, 4050), (0, 0))) == 1  # one and a half busy: one thread
    assert cores(start, proc_stat((1100, 5000), (2100, 4000), (0, 0))) == 1  # never none
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert cores(start, proc_stat((1100, 5000), (2002, 4098), (1, 99))) == 2

    def unreadable() -> str:
        raise OSError("no /proc here")

    assert idle_cores(unreadable, window=0) == 1  # the load average stands in: 3 cores, 1.6 busy
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0.0, 0.0), raising=False)
    assert idle_cores(unreadable, window=0) == 3


def test_a_run_says_only_what_matters(tmp_path):
    args = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--model.steps=2", "--data.prompts=[a red star]"]
    args += [f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    result = subprocess.run([sys.executable, "-m", "clip_inversion", *args], capture_output=True, text=True, check=True)
    # no banner, tips, seed notice, deprecation warnings or open_clip log lines: our own lines only
    assert result.stderr.splitlines() == [
        f"clip-inversion: running on cpu, 1 process on 1 node, precision 32-true, run directory {tmp_path}",
        "ResolutionSchedule milestones at steps [100] come after the last step (--model.steps=2): never reached",
        "--writer.snapshot_steps [25, 100, 200] come after the last step (--model.steps=2): never written",
        f"clip-inversion: 1 of 1 prompts finished in {tmp_path}",
    ]
    assert result.stdout == ""


def test_a_log_file_gets_progress_lines_not_a_bar(tmp_path):
    args = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--model.steps=25", "--model.copies=2"]
    args += ["--model.init_size=16", "--data.prompts=[a red star]", f"--trainer.default_root_dir={tmp_path / 'run'}"]
    with open(tmp_path / "log.txt", "w") as log:  # stdout and stderr to a file, as under SLURM
        subprocess.run(
            [sys.executable, "-m", "clip_inversion", *args], stdout=log, stderr=subprocess.STDOUT, check=True
        )
    text = (tmp_path / "log.txt").read_text()
    assert "\r" not in text and len(text.splitlines()) <= 40, text
    steps = re.findall(r"^clip-inversion: batch 1/1, step (\d+)/25, loss \d+\.\d{4}, \d+ s$", text, flags=re.MULTILINE)
    assert steps == ["10", "20", "25"], text  # every log_every_n_steps (10 in the quickstart), and the last step


def test_the_bar_stays_on_a_terminal_and_lines_go_to_a_log(tmp_path, monkeypatch):
    from lightning.pytorch.callbacks import TQDMProgressBar

    from clip_inversion.callbacks import LogProgress

    args = ["--config", str(CONFIGS / "quickstart.yaml"), f"--trainer.default_root_dir={tmp_path}"]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert type(run(args, fit=False).trainer.progress_bar_callback) is TQDMProgressBar
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    assert type(run(args, fit=False).trainer.progress_bar_callback) is LogProgress
    chosen = [*args, "--trainer.callbacks+=TQDMProgressBar"]  # a bar the user asks for is kept
    assert type(run(chosen, fit=False).trainer.progress_bar_callback) is TQDMProgressBar


@pytest.mark.parametrize(
    ("steps", "logged", "every", "expected"),
    [(200, 10, None, 20), (3400, 50, None, 350), (60, 10, None, 10), (20, 50, None, 50), (200, 10, 7, 7)],
)
def test_progress_lines_come_about_every_tenth_of_a_batch_on_logged_steps(steps, logged, every, expected):
    from types import SimpleNamespace

    from clip_inversion.callbacks import LogProgress

    assert LogProgress(every).interval(SimpleNamespace(log_every_n_steps=logged), steps) == expected


@pytest.mark.parametrize(
    ("flags", "precision"),
    [
        (set(), "precision 32-true (bf16-mixed asked for, but this CPU has no AMX bf16 units"),
        ({"avx512_bf16", "amx_bf16"}, "precision bf16-mixed (this CPU has AMX bf16 units)"),
    ],
)
def test_a_run_says_where_it_runs_and_runs_bf16_only_where_it_pays(tmp_path, monkeypatch, capsys, flags, precision):
    monkeypatch.setattr("clip_inversion.precision.cpu_flags", lambda: flags)
    args = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "fast.yaml")]
    args += ["--model.steps=1", "--data.prompts=[a red star]", "--trainer.logger=false"]
    main([*args, f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "running on" in line]
    assert line.startswith(f"clip-inversion: running on cpu, 1 process on 1 node, {precision}")
    assert line.endswith(f"run directory {tmp_path}")
    # the run directory records the precision the images were made with
    assert json.loads((tmp_path / "run.json").read_text())["settings"]["trainer.precision"] == precision.split()[1]


def test_several_devices_without_a_gpu_warn_that_they_are_cpu_processes(tmp_path):
    args = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--model.steps=1", "--trainer.logger=false"]
    args += ["--data.prompts=[a red star, a blue square]", "--data.batch_size=1", "--trainer.devices=2"]
    args += [f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"]
    launched = {"MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "GLOBAL_RANK", "WORLD_SIZE"}  # left by runs
    env = {k: v for k, v in os.environ.items() if k not in launched} | {"CUDA_VISIBLE_DEVICES": ""}  # no GPU
    result = subprocess.run(
        [sys.executable, "-m", "clip_inversion", *args], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()  # the first process speaks, once
    warning = (
        "clip-inversion: warning: no GPU found (--trainer.accelerator=auto): --trainer.devices=2 runs 2 CPU processes"
    )
    assert lines.count(warning) == 1
    assert sum(line.startswith("clip-inversion: running on cpu, 2 processes on 1 node, ") for line in lines) == 1


def test_a_step_that_cannot_compile_names_the_option_in_one_line(tmp_path, monkeypatch, capsys):
    import torch._inductor.compile_fx

    def no_compiler(*args, **kwargs):
        raise OSError("gcc: command not found")

    monkeypatch.setattr(torch._inductor.compile_fx, "compile_fx", no_compiler)
    args = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "augment" / "affine-8.yaml")]
    args += ["--model.compile=true", "--model.steps=1", "--data.prompts=[a red star]", "--trainer.logger=false"]
    with pytest.raises(SystemExit) as exit_:
        main([*args, f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("clip-inversion: error: --model.compile=true: torch.compile failed on cpu (")
    assert "gcc: command not found" in err[-1] and not any("Traceback" in line for line in err)


def test_the_compiled_step_is_traced_once_for_all_its_steps(tmp_path, monkeypatch):
    from torch._dynamo.testing import CompileCounter

    counter, compile_ = CompileCounter(), torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kwargs: compile_(fn, backend=counter))  # traces, no codegen
    args = ["fit", "--config", str(CONFIGS / "quickstart.yaml"), "--config", str(CONFIGS / "augment" / "affine-8.yaml")]
    args += ["--model.compile=true", "--model.steps=3", "--data.prompts=[a red star]", "--trainer.logger=false"]
    main([*args, f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false"])
    assert counter.frame_count == 1  # the step number is an input, not a constant to recompile for
    assert (tmp_path / "manifest.jsonl").is_file()
