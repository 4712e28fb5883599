"""The catalogue of bad inputs (docs/errors.md): one line naming the input, exit 2, or a documented recovery.

Every case runs the user's path, ``main(["fit", "--config", "configs/quickstart.yaml", ...])``.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
import torchvision.utils

import clip_inversion.core.clip
import clip_inversion.module
from clip_inversion.cli import main, run
from clip_inversion.data import Prompt, plan

ROOT = Path(__file__).parents[1]
QUICKSTART = str(ROOT / "configs" / "quickstart.yaml")
JUDGE_WEIGHTS = ROOT / "clip_inversion" / "toyworld" / "models" / "toy-judge" / "open_clip_model.safetensors"


def _truncated_checkpoint() -> bytes:
    buffer = io.BytesIO()
    torch.save({"state_dict": {"image.pixels": torch.zeros(1, 3, 32, 32)}}, buffer)
    return buffer.getvalue()[:2000]


TRUNCATED_CHECKPOINT = _truncated_checkpoint()


class RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass
class Case:
    """A bad input: files to create in ``{tmp}``, the arguments after the quickstart config, the message."""

    id: str
    args: list[str]
    message: str
    files: dict[str, str | bytes] = field(default_factory=dict)


def prompts_file(name: str, content: str | bytes) -> dict:
    return {"files": {name: content}, "args": [f"--data.prompts_file={{tmp}}/{name}", "--data.prompts=null"]}


def case(id: str, message: str, args: list[str] = (), files: dict | None = None, **more) -> Case:
    args = list(args) + more.get("args", [])
    return Case(id, args, message, {**(files or {}), **more.get("files", {})})


SCHEDULE = "--trainer.callbacks+=clip_inversion.callbacks.ResolutionSchedule"
MANIFEST_LINE = '{"id": "00000", "prompt": "a red circle", "image": null}\n'  # a finished prompt
CASES = [
    # prompts
    case("empty-prompt", "prompt 1 of --data.prompts is empty", ["--data.prompts=[a red star, '  ']"]),
    case("no-prompts", "no prompts: give --data.prompts or --data.prompts_file", ["--data.prompts=null"]),
    case("prompts-file-missing", "prompts file not found: {tmp}/none.txt", ["--data.prompts_file={tmp}/none.txt"]),
    case("prompts-file-empty", "{tmp}/p.txt holds no prompt", **prompts_file("p.txt", "\n# a comment only\n  \n")),
    case("prompts-file-is-a-directory", "{tmp} is a directory: give one of its prompts files", ["--data.prompts_file={tmp}", "--data.prompts=null"]),
    case("prompts-file-not-utf8", "{tmp}/p.txt:2: not valid UTF-8", **prompts_file("p.txt", b"a red star\n\xff\xfe\n")),
    case("jsonl-bad-json", "{tmp}/p.jsonl:2: not valid JSON", **prompts_file("p.jsonl", '{"prompt": "a"}\n{"prompt":\n')),
    case("jsonl-not-an-object", "{tmp}/p.jsonl:1: expected a JSON object", **prompts_file("p.jsonl", '["a"]\n')),
    case("jsonl-empty-prompt", "{tmp}/p.jsonl:1: empty or missing prompt", **prompts_file("p.jsonl", '{"prompt": " "}')),
    case("jsonl-unknown-field", "{tmp}/p.jsonl:1: unknown field(s) ['colour']", **prompts_file("p.jsonl", '{"prompt": "a", "colour": 1}')),
    case("csv-no-prompt-column", "{tmp}/p.csv:1: the CSV header needs a 'prompt' column", **prompts_file("p.csv", "text\na\n")),
    case("csv-wrong-columns", "{tmp}/p.csv:2: expected 2 columns", **prompts_file("p.csv", "prompt,id\na,1,extra\n")),
    case("unsafe-id", "{tmp}/p.jsonl:1: id '../x' must be", **prompts_file("p.jsonl", '{"prompt": "a", "id": "../x"}')),
    case("duplicate-id", "id 'a' is used twice", **prompts_file("p.jsonl", '{"prompt": "x", "id": "a"}\n{"prompt": "y", "id": "a"}')),
    case("bad-seed", "{tmp}/p.csv:2: seed 'x' is not an integer", **prompts_file("p.csv", "prompt,seed\na,x\n")),
    case("target-empty-term", "target 'a red star |': an empty term", ["--data.prompts=[a red star | ]"]),
    case("target-only-negative", "target 'blue:-1': needs at least one term with a positive weight", ["--data.prompts=['blue:-1']"]),
    case("target-file-missing", "target '{tmp}/cat.png': no image file '{tmp}/cat.png'", ["--data.prompts=[{tmp}/cat.png]"]),
    case("target-embedding-damaged", "cannot load the embedding '{tmp}/e.npy': the file is damaged",
         ["--data.prompts=['a star | {tmp}/e.npy:0.5']"], {"e.npy": "not an array"}),
    case("init-image-missing", "cannot read image '{tmp}/none.png'", ["--model.init_image={tmp}/none.png"]),
    case("init-image-unreadable", "cannot read image '{tmp}/start.png'", ["--model.init_image={tmp}/start.png"], {"start.png": "not a PNG"}),
    # models and weights
    case("unknown-model", "unknown model name 'ViT-B-61' (--model.clip.model_name). Did you mean", ["--model.clip.model_name=ViT-B-61"]),
    case("unknown-tag", "--model.clip.pretrained='no-such-tag' is neither a file nor a pretrained tag of ViT-B-16",
         ["--model.clip.model_name=ViT-B-16", "--model.clip.pretrained=no-such-tag"]),
    case("tag-not-available-offline", "--model.clip.cache_dir",
         ["--model.clip.model_name=RN50", "--model.clip.pretrained=openai", "--model.clip.cache_dir={tmp}"]),
    case("local-dir-without-config", "local-dir:{tmp}: no open_clip_config.json there", ["--model.clip.model_name=local-dir:{tmp}"]),
    case("damaged-weights", "could not load toy-resnet + {tmp}/w.safetensors: the file is damaged",
         ["--model.clip.model_name=toy-resnet", "--model.clip.pretrained={tmp}/w.safetensors"],
         {"w.safetensors": JUDGE_WEIGHTS.read_bytes()[:5000]}),  # a download cut short
    case("mismatched-weights", "the weights do not fit this architecture",
         ["--model.clip.model_name=toy-resnet", f"--model.clip.pretrained={JUDGE_WEIGHTS}"]),
    case("malicious-weights", "refused: it holds Python objects that could run code",
         ["--model.clip.model_name=toy-resnet", "--model.clip.pretrained={tmp}/evil.pt"]),
    # settings
    case("zero-steps", "--model.steps must be at least 1", ["--model.steps=0"]),
    case("zero-copies", "--model.copies must be at least 1", ["--model.copies=0"]),
    case("negative-tv", "--model.tv must be at least 0", ["--model.tv=-1"]),
    case("zero-grad-clip", "--model.grad_clip must be positive or null", ["--model.grad_clip=0"]),
    case("negative-learning-rate", "--model.optimizer: Invalid learning rate: -0.1", ["--model.optimizer=Adam", "--model.optimizer.lr=-0.1"]),
    case("zero-learning-rate", "--model.optimizer: the learning rate must be positive", ["--model.optimizer=SGD", "--model.optimizer.lr=0"]),
    case("unknown-nsfw-action", "Parser key \"writer.nsfw\": Does not validate", ["--writer.nsfw=hide"]),
    case("nsfw-threshold-out-of-range", "--writer.nsfw_threshold must be in (0, 1], not 2.0", ["--writer.nsfw=blur", "--writer.nsfw_threshold=2"]),
    case("augmentation-unknown", "--model.augmentations: module 'kornia.augmentation' has no attribute 'RandomWarp'",
         ["--model.augmentations=[{class_path: kornia.augmentation.RandomWarp}]"]),
    case("huge-image", "--model.init_size must be at most 2048", ["--model.init_size=100000"]),
    case("zero-batch-size", "--data.batch_size must be at least 1", ["--data.batch_size=0"]),
    case("schedule-not-increasing", "growing sizes", [SCHEDULE, "--trainer.callbacks.milestones={10: 96, 20: 80}"]),
    case("schedule-too-large", "of at most 2048 pixels", [SCHEDULE, "--trainer.callbacks.milestones={10: 10000}"]),
    case("schedule-not-above-init-size", "sizes must be larger than --model.init_size=64", ["--model.init_size=64"]),
    case("unknown-option", "unrecognized arguments: --model.stepz=3", ["--model.stepz=3"]),
    case("wrong-type", 'Parser key "model.steps"', ["--model.steps=abc"]),
    case("config-missing", "File does not exist", ["--config={tmp}/none.yaml"]),
    case("unsafe-yaml", "could not determine a constructor", ["--config={tmp}/evil.yaml"],
         {"evil.yaml": "model: !!python/object/apply:os.system ['touch {tmp}/pwned']\n"}),
    case("config-not-yaml", "{tmp}/bad.yaml:4: not valid YAML: expected ',' or ']'", ["--config={tmp}/bad.yaml"],
         {"bad.yaml": "model:\n  steps: 3\n  tv: [0.1\ndata:\n  prompts: [a]\n"}),
    case("sweep-config-given-to-fit", "run it with clip-inversion-sweep", ["--sweep.models=[toy-subject, toy-judge]"]),
    # devices and files
    case("no-such-accelerator", "(--trainer.accelerator, --trainer.devices, --trainer.strategy)", ["--trainer.accelerator=gpu"]),
    case("run-dir-not-writable", "cannot write {tmp}/file/run", ["--trainer.default_root_dir={tmp}/file/run"],
         {"file": "a file, not a directory"}),
    case("run-dir-other-settings", "{tmp} holds results made with other settings (model.steps 999 -> 200",
         ["--trainer.default_root_dir={tmp}"], {"manifest.jsonl": MANIFEST_LINE, "run.json": '{"settings": {"model.steps": 999}}'}),
    case("run-dir-unrecorded-settings", "{tmp} holds results made with settings it does not record",
         ["--trainer.default_root_dir={tmp}"], {"manifest.jsonl": MANIFEST_LINE}),
    case("checkpoint-missing", "--ckpt_path={tmp}/none.ckpt: no such file", ["--ckpt_path={tmp}/none.ckpt"]),
    case("checkpoint-damaged", "--ckpt_path={tmp}/bad.ckpt: the file is damaged", ["--ckpt_path={tmp}/bad.ckpt"],
         {"bad.ckpt": TRUNCATED_CHECKPOINT}),
    case("checkpoint-malicious", "--ckpt_path={tmp}/evil.pt: refused: it holds Python objects", ["--ckpt_path={tmp}/evil.pt"]),
    case("checkpoint-not-an-inversion", "--ckpt_path={tmp}/other.ckpt: not a clip-inversion checkpoint", ["--ckpt_path={tmp}/other.ckpt"]),
]  # fmt: skip
# The cases about the model itself are found by loading it; every other one fails before any model loads.
MODEL_CASES = {"unknown-model", "unknown-tag", "tag-not-available-offline", "local-dir-without-config"}
MODEL_CASES |= {"damaged-weights", "mismatched-weights", "malicious-weights", "target-embedding-damaged"}
RECOVERIES = {  # documented behaviours that are not errors, each with its own test below
    "long-prompt": "test_a_prompt_longer_than_the_context_is_truncated_with_a_warning_naming_it",
    "more-ranks-than-prompts": "test_more_ranks_than_prompts_pad_without_writing_twice",
    "schedule-after-last-step": "test_a_milestone_after_the_last_step_is_warned_about",
    "snapshot-after-last-step": "test_a_snapshot_after_the_last_step_is_warned_about",
    "non-finite-loss": "test_a_nan_stops_only_its_prompt_and_keeps_its_last_finite_image",
    "disk-full": "test_a_full_disk_fails_in_one_line_and_the_rerun_completes_the_sweep",
    "killed-run": "tests/test_sweep.py::test_killed_sweep_resumes_without_redoing_finished_prompts",
}


@pytest.mark.parametrize("bad", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_with_exit_2(bad: Case, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(clip_inversion.core.clip, "_hub_reachable", lambda timeout=3.0: False)  # offline, always
    loaded, load_clip = [], clip_inversion.module.load_clip
    monkeypatch.setattr(clip_inversion.module, "load_clip", lambda spec: loaded.append(spec) or load_clip(spec))
    for name, content in bad.files.items():
        path = tmp_path / name
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content.replace("{tmp}", str(tmp_path)), encoding="utf-8")
    marker = tmp_path / "pwned"
    torch.save({"state_dict": RunsCode(str(marker))}, tmp_path / "evil.pt")
    torch.save({"state_dict": {"weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    args = [a.replace("{tmp}", str(tmp_path)) for a in bad.args]
    if not any(a.startswith("--trainer.default_root_dir") for a in args):
        args.append(f"--trainer.default_root_dir={tmp_path / 'run'}")
    before = tree(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", QUICKSTART, "--trainer.enable_progress_bar=false", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    if err and err[0].startswith("clip-inversion: running on "):  # the start-up line: where the run was to run
        err = err[1:]
    assert len(err) == 1 and err[0].startswith("clip-inversion: error: "), "one error line, nothing else"
    assert bad.message.replace("{tmp}", str(tmp_path)) in err[0]
    assert not marker.exists(), "code from a file was run"
    assert bad.id in MODEL_CASES or not loaded, "a model was loaded before the input was checked"
    assert tree(tmp_path) == before, "a refused run leaves every directory as it found it"


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every file (its content) and folder (``None``) under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else None for p in folder.rglob("*")}


def test_a_failed_start_leaves_the_run_directory_as_it_found_it(tmp_path, capsys):
    """A run that fails after claiming the directory (its settings in run.json, a TensorBoard version) and before
    its first step takes both back, and keeps everything that was there."""
    run_dir = tmp_path / "run"
    args = quickstart(run_dir, "--model.steps=2", f"--data.prompts=[{tmp_path}/cat.png]")  # found missing late
    (run_dir / "lightning_logs" / "version_0").mkdir(parents=True)
    (run_dir / "lightning_logs" / "version_0" / "events.out.tfevents.1").write_bytes(b"an earlier run")
    (run_dir / "run.json").write_text('{"settings": {"model.steps": 999}}')  # no results: any settings may claim it
    (run_dir / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    with pytest.raises(SystemExit):
        main(args)
    assert "no image file" in capsys.readouterr().err
    assert tree(tmp_path) == before


def test_the_catalogue_in_the_docs_lists_exactly_the_tested_cases():
    text = (ROOT / "docs" / "errors.md").read_text(encoding="utf-8")
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", text, flags=re.MULTILINE)
    assert sorted(documented) == sorted([c.id for c in CASES] + list(RECOVERIES))
    assert len(documented) == len(set(documented))


def quickstart(tmp_path: Path, *args: str) -> list[str]:
    return [
        "fit",
        "--config",
        QUICKSTART,
        f"--trainer.default_root_dir={tmp_path}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_checkpointing=false",
        "--trainer.callbacks=[]",
        "--model.init_size=16",
        "--model.copies=2",
        *args,
    ]


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "manifest.jsonl").read_text().splitlines()]


def test_a_prompt_longer_than_the_context_is_truncated_with_a_warning_naming_it(tmp_path):
    long_prompt = "a red star " + "and a blue circle " * 30
    with pytest.warns(UserWarning, match=re.escape(repr(long_prompt.strip())[:40])):
        run(quickstart(tmp_path, "--model.steps=2", f"--data.prompts=[{long_prompt}]"))
    assert [r["prompt"] for r in records(tmp_path)] == [long_prompt.strip()]


def test_a_milestone_after_the_last_step_is_warned_about(caplog):
    from clip_inversion.callbacks import ResolutionSchedule
    from clip_inversion.module import CLIPInversion

    ResolutionSchedule({100: 64, 500: 96}).setup(None, CLIPInversion(steps=200), "fit")
    (record,) = caplog.records  # one line that names the setting, not a Lightning frame
    assert (
        record.levelname == "WARNING" and "steps [500] come after the last step (--model.steps=200)" in record.message
    )


def test_a_snapshot_after_the_last_step_is_warned_about(tmp_path, caplog):
    run(quickstart(tmp_path, "--model.steps=3", "--data.prompts=[a red star]", "--writer.snapshot_steps=[2, 5, 9]"))
    (warning,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "--writer.snapshot_steps [5, 9] come after the last step (--model.steps=3): never written" in warning.message
    assert [p.name for p in tmp_path.glob("snapshots/*/*.png")] == ["step-00002.png"]


def test_more_ranks_than_prompts_pad_without_writing_twice():
    prompts = [Prompt(f"{i}", f"prompt {i}", i) for i in range(3)]
    plans = [plan(prompts, batch_size=2, world_size=4, rank=r) for r in range(4)]
    assert all(len(p) == 1 for p in plans)  # every rank runs the same number of epochs
    written = [pid for p in plans for b in p for pid, pending in zip(b.ids, b.pending) if pending]
    assert sorted(written) == ["0", "1", "2"]  # padding ranks invert a copy that is never written


def nan_for_the_second_prompt_from_step_4(monkeypatch) -> list[torch.Tensor]:
    """Make prompt 1's loss NaN from the 4th step of the inverter on; returns each step's images."""
    from clip_inversion.core.inverter import Inverter

    original, images = Inverter.terms, []

    def terms(self, pixels, step):
        images.append(pixels.detach().clone())  # the images this step's loss is computed on
        terms = original(self, pixels, step)
        if len(images) >= 4:  # a NaN that also poisons the gradient of prompt 1
            terms["loss"] = terms["loss"] * torch.tensor([1.0, float("nan"), 1.0])
        return terms

    monkeypatch.setattr(Inverter, "terms", terms)
    return images


def test_a_nan_stops_only_its_prompt_and_keeps_its_last_finite_image(tmp_path, monkeypatch):
    prompts = "--data.prompts=[a red circle, a blue star, a green cross]"
    clean = run(quickstart(tmp_path / "clean", "--model.steps=6", prompts, "--model.augmentations=[]"))
    images = nan_for_the_second_prompt_from_step_4(monkeypatch)
    cli = run(quickstart(tmp_path / "nan", "--model.steps=6", prompts, "--model.augmentations=[]"))
    lines = records(tmp_path / "nan")
    assert [r["nonfinite_step"] for r in lines] == [None, 4, None]
    final = cli.model.inverter.image.pixels.detach()
    assert torch.equal(final[1], images[2][1])  # the image of step 3, the last with a finite loss
    assert torch.isfinite(final).all()
    others = clean.model.inverter.image.pixels.detach()[[0, 2]]
    torch.testing.assert_close(final[[0, 2]], others)  # the other prompts ran exactly as without the NaN
    assert all(r["cosine"] is not None for r in lines)


def test_a_nan_stop_survives_a_resume_from_the_last_checkpoint(tmp_path, monkeypatch):
    prompts = "--data.prompts=[a red circle, a blue star, a green cross]"
    args = quickstart(tmp_path, "--model.steps=8", prompts, "--model.augmentations=[]")
    checkpoint = tmp_path / "every-step.yaml"  # last.ckpt after every step
    checkpoint.write_text(
        "trainer:\n  callbacks:\n    - class_path: clip_inversion.callbacks.RunCheckpoint\n"
        "      init_args: {every_n_train_steps: 1}\n"
    )
    images = nan_for_the_second_prompt_from_step_4(monkeypatch)
    run([*args, "--trainer.enable_checkpointing=true", "--config", str(checkpoint), "--trainer.max_steps=6"])
    assert not (tmp_path / "manifest.jsonl").exists()
    monkeypatch.undo()  # the rerun computes finite losses: only the checkpoint knows prompt 1 stopped
    cli = run([*args, "--trainer.enable_checkpointing=true", "--config", str(checkpoint), "--ckpt_path=last"])
    assert [r["nonfinite_step"] for r in records(tmp_path)] == [None, 4, None]
    assert torch.equal(cli.model.inverter.image.pixels.detach()[1], images[2][1])  # still step 3's image


def test_a_full_disk_fails_in_one_line_and_the_rerun_completes_the_sweep(tmp_path, monkeypatch, capsys):
    args = quickstart(tmp_path, "--model.steps=2", "--data.prompts=[a red circle, a blue star]", "--data.batch_size=1")
    save, calls = torchvision.utils.save_image, []  # what rundir.atomic_save_image calls

    def full_after_the_first_image(image, path, **kwargs):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        save(image, path, **kwargs)

    monkeypatch.setattr(torchvision.utils, "save_image", full_after_the_first_image)
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if x.startswith("clip-inversion: error:")]
    assert "No space left on device" in line and "rerun the same command" in line
    assert [r["prompt"] for r in records(tmp_path)] == ["a red circle"]  # the finished prompt is kept
    assert not list(tmp_path.glob("images/.tmp-*")), "no half-written file is left"
    monkeypatch.setattr(torchvision.utils, "save_image", save)  # space freed: the same command again
    cli = run(args)
    assert [r["prompt"] for r in records(tmp_path)] == ["a red circle", "a blue star"]
    assert cli.trainer.global_step == 2  # only the unfinished prompt was inverted
