"""``clip-inversion-evaluate`` on the toy world, whose own renders are the real images."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from clip_inversion.cli import run
from clip_inversion.rundir import append_records, atomic_save_image
from clip_inversion.studies.evaluate import FeatureCache, Settings, evaluate, main
from clip_inversion.studies.metrics import JudgeCosine, score_run
from clip_inversion.toyworld.real import write_real

ROOT = Path(__file__).parents[1]
CAPTIONS = ["a red circle", "a blue square", "a yellow star", "a green triangle", "a purple cross", "an orange star"]


def invert(root: Path, name: str, *args: str) -> Path:
    """The six captions, two seeds each, inverted by the quickstart recipe at 60 steps (and ``args``)."""
    prompts = root / "prompts.jsonl"
    rows = [{"id": f"c{i}-s{s}", "prompt": c, "seed": s} for s in (0, 1) for i, c in enumerate(CAPTIONS)]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    schedule = "[{class_path: clip_inversion.callbacks.ResolutionSchedule, init_args: {milestones: {30: 64}}}]"
    run(
        [
            "fit",
            "--config",
            str(ROOT / "configs" / "quickstart.yaml"),
            "--data.prompts=null",
            f"--data.prompts_file={prompts}",
            "--data.batch_size=12",
            f"--trainer.default_root_dir={root / name}",
            "--trainer.enable_progress_bar=false",
            "--trainer.logger=false",
            "--writer.snapshot_steps=[]",
            "--model.steps=60",
            f"--trainer.callbacks={schedule}",
            *args,
        ]
    )
    return root / name


def write_noise(folder: Path, n: int = 12) -> Path:
    """A "run" of uniform noise images of the captions."""
    generator = torch.Generator().manual_seed(0)
    records = []
    for i in range(n):
        atomic_save_image(torch.rand(3, 64, 64, generator=generator), folder / f"{i}.png")
        records.append({"id": str(i), "prompt": CAPTIONS[i % len(CAPTIONS)], "image": f"{i}.png"})
    append_records(folder, records)
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Real renders (6 a caption), held-out renders, noise, the quickstart recipe and a much worse one."""
    root = tmp_path_factory.mktemp("evaluate")
    return {
        "real": write_real(CAPTIONS, root / "real", per_caption=6, seed=0),
        "held-out": write_real(CAPTIONS, root / "held-out", per_caption=2, seed=1),
        "noise": write_noise(root / "noise"),
        "quickstart": invert(root, "quickstart"),
        # no augmentation, 4 steps, no upsampling: the start noise barely moved
        "worse": invert(root, "worse", "--model.steps=4", "--model.augmentations=[]", "--trainer.callbacks=[]"),
    }


@pytest.fixture(scope="module")
def scores(world, judge):
    names = ["held-out", "quickstart", "worse", "noise"]
    settings = Settings(real=str(world["real"]), bootstrap=20, out=str(world["real"].parent / "report"))
    return dict(zip(names, evaluate([world[n] for n in names], settings, judge)))


def test_held_out_real_images_are_close_to_the_real_ones(scores):
    held_out = scores["held-out"]
    assert held_out["fid"] < scores["quickstart"]["fid"] / 2 and held_out["fid"] < scores["noise"]["fid"] / 10
    assert held_out["kid"] < scores["noise"]["kid"] / 10
    assert held_out["accuracy"] == 1 and held_out["clipsim"] > 90


def test_inversions_score_between_real_images_and_noise(scores):
    quickstart, held_out, noise = scores["quickstart"], scores["held-out"], scores["noise"]
    assert held_out["fid"] < quickstart["fid"] < noise["fid"]
    assert held_out["clipsim"] > quickstart["clipsim"] > noise["clipsim"]
    assert quickstart["accuracy"] > noise["accuracy"] and quickstart["fid_high"] < noise["fid"]


def test_a_worse_recipe_scores_worse(scores):
    quickstart, worse = scores["quickstart"], scores["worse"]
    assert quickstart["fid"] < worse["fid"] / 2 and quickstart["kid"] < worse["kid"]
    assert quickstart["clipsim"] > worse["clipsim"] + 20 and quickstart["accuracy"] > worse["accuracy"]
    assert quickstart["subject_cosine"] > worse["subject_cosine"]


def test_clipsim_and_accuracy_intervals_hold_their_estimates_and_have_width(scores):
    for name in ("quickstart", "worse"):
        row = scores[name]
        for key in ("clipsim", "accuracy"):  # percentile intervals: nothing forces them around the estimate
            assert row[f"{key}_low"] <= row[key] <= row[f"{key}_high"], (name, key)
            assert row[f"{key}_high"] > row[f"{key}_low"], (name, key)


def test_the_command_prints_and_writes_the_table_in_the_runs_report_folder(world, capsys):
    main([str(world["quickstart"]), "--real", str(world["real"]), "--bootstrap", "10"])
    printed = capsys.readouterr().out
    report = world["quickstart"] / "report"
    assert "| run | images | CLIPSIM | accuracy | FID | KID | FID/KID on | subject cosine |" in printed
    assert "among 6 |" in printed and "| 6 prompts: 12 vs 36 real images |" in printed
    assert "FID/KID features: judge toy-judge" in printed  # which extractor, in every report
    assert printed.startswith((report / "evaluation.md").read_text())
    (row,) = list(csv.DictReader((report / "evaluation.csv").open()))
    assert row["run"] == str(world["quickstart"]) and row["features"] == "judge toy-judge"
    assert int(row["images"]) == 12 and int(row["real_images"]) == 36 and int(row["candidates"]) == 6
    events = EventAccumulator(str(next((report / "tensorboard").glob("events.*")))).Reload()
    assert {"clipsim", "accuracy", "fid", "kid"} <= {tag.rsplit("/", 1)[1] for tag in events.Tags()["scalars"]}


def test_an_interrupted_evaluation_resumes_without_recomputing(world, judge, tmp_path, monkeypatch):
    encoded = []
    encode = type(judge).encode_image

    def counting(self, images):
        if len(encoded) == 2 and interrupt:
            raise KeyboardInterrupt
        encoded.append(len(images))
        return encode(self, images)

    monkeypatch.setattr(type(judge), "encode_image", counting)
    settings = Settings(real=str(world["real"]), bootstrap=0, batch_size=8, out=str(tmp_path))
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        evaluate([world["quickstart"]], settings, judge)
    assert sum(encoded) == 16  # two batches of 8 real images, then the interruption
    interrupt, encoded[:] = False, []
    evaluate([world["quickstart"]], settings, judge)
    assert sum(encoded) == 36 - 16 + 12  # the rest of the real images, then the run's
    encoded.clear()
    first = (tmp_path / "evaluation.csv").read_text()
    evaluate([world["quickstart"]], settings, judge)
    assert encoded == [] and (tmp_path / "evaluation.csv").read_text() == first
    # a rewritten image is computed again
    first_line = (world["quickstart"] / "manifest.jsonl").read_text().splitlines()[0]
    image = world["quickstart"] / json.loads(first_line)["image"]
    image.write_bytes(image.read_bytes())
    assert FeatureCache.key(image) not in FeatureCache(tmp_path / "cache" / "judge-toy-judge-2.pt").entries


def test_precomputed_judge_embeddings_score_like_images(judge, world):
    images = torch.stack([torch.rand(3, 64, 64), torch.zeros(3, 64, 64)])
    from_images, from_embeddings = JudgeCosine(CAPTIONS, judge), JudgeCosine(CAPTIONS, judge)
    from_images.update(images, torch.tensor([0, 1]))
    from_embeddings.update(judge.encode_image(images), torch.tensor([0, 1]))
    torch.testing.assert_close(from_images.compute(), from_embeddings.compute())


def test_toy_real_images_are_of_their_captions_and_seeded(world, tmp_path):
    lines = [json.loads(line) for line in (world["real"] / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in lines] == [c for c in CAPTIONS for _ in range(6)]
    again = write_real(CAPTIONS[:1], tmp_path / "again", per_caption=6, seed=0)
    first = json.loads((again / "manifest.jsonl").read_text().splitlines()[0])
    assert (again / first["image"]).read_bytes() == (world["real"] / lines[0]["image"]).read_bytes()
    held_out = json.loads((world["held-out"] / "manifest.jsonl").read_text().splitlines()[0])
    assert (world["held-out"] / held_out["image"]).read_bytes() != (world["real"] / lines[0]["image"]).read_bytes()


def test_the_coco_config_names_the_protocol(world, capsys):
    config = yaml.safe_load((ROOT / "configs" / "eval" / "coco.yaml").read_text())
    assert config["judge"] == "ViT-L-14-quickgelu" and config["expected_images"] == 10_000
    settings = Settings(**config)  # every key is an option
    assert settings.features == "inception"
    with pytest.raises(SystemExit) as exit_:  # here the COCO images are not on disk: one line
        main([str(world["quickstart"]), "--config", str(ROOT / "configs" / "eval" / "coco.yaml")])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("clip-inversion-evaluate: error: --real data/coco/")
    assert "python -m clip_inversion.studies.coco" in line  # how to get the real images


def _bad_cases(world: dict, tmp: Path) -> list[tuple[list[str], str]]:
    (tmp / "empty").mkdir()
    broken, garbled = tmp / "broken", tmp / "garbled"
    broken.mkdir(), garbled.mkdir()
    append_records(broken, [{"id": "0", "prompt": "a red circle", "image": "gone.png"}])
    append_records(garbled, [{"id": "0", "prompt": "a red circle", "image": "0.png"}])
    (garbled / "0.png").write_bytes(b"not a png")
    other = write_real(["a red square"], tmp / "other", per_caption=1)
    (tmp / "file").write_text("")
    run_dir, real = str(world["quickstart"]), str(world["real"])
    return [
        ([str(tmp / "none")], "run {}/none: no such directory"),
        ([str(tmp / "empty")], "no manifest.jsonl listing images"),
        ([str(broken)], "1 image(s) in manifest.jsonl are missing"),
        ([str(garbled)], "cannot read image"),
        ([run_dir, "--real", str(tmp / "none")], "--real {}/none: no such directory"),
        ([run_dir, "--real", str(tmp / "empty")], "no manifest.jsonl listing images"),
        ([run_dir, "--real", str(other)], "none of its captions is a prompt of run"),
        ([run_dir, "--real", real, "--features", "inception"], "--features inception needs"),
        ([run_dir, "--features", "clip"], "--features must be judge or inception"),
        ([run_dir, "--candidates", str(ROOT / "configs" / "prompts" / "toy-world.txt")], "is not among --candidates"),
        ([run_dir, "--judge", "ViT-B-61"], "unknown model name"),
        ([run_dir, "--out", str(tmp / "file" / "report")], "choose another report folder with --out"),
    ]


def test_bad_inputs_end_in_one_line_and_exit_2(world, tmp_path, capsys):
    for args, message in _bad_cases(world, tmp_path):
        with pytest.raises(SystemExit) as exit_:
            main(args)
        err = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and len(err) == 1, (args, err)
        assert err[0].startswith("clip-inversion-evaluate: error: ") and message.format(tmp_path) in err[0], err


def test_the_coco_sample_is_seeded_literal_and_readable_as_real_images(tmp_path, capsys):
    from torchvision.io import write_png

    from clip_inversion.core.targets import parse_target
    from clip_inversion.studies.coco import main as coco
    from clip_inversion.studies.features import read_image_set

    (tmp_path / "val2014").mkdir()
    texts = ["A clock that reads 10:30", "a dog | a cat", "two  men\nsurfing", "a red bus", "a bowl of fruit"]
    annotations = {"images": [], "annotations": []}
    for i, text in enumerate(texts):
        write_png(torch.full((3, 8, 8), 40 * i, dtype=torch.uint8), str(tmp_path / "val2014" / f"{i}.png"))
        annotations["images"].append({"id": i, "file_name": f"{i}.png"})
        annotations["annotations"].append({"id": 10 + i, "image_id": i, "caption": text})
    (tmp_path / "captions.json").write_text(json.dumps(annotations))
    args = ["--annotations", str(tmp_path / "captions.json"), "--images", str(tmp_path / "val2014"), "--n", "5"]
    coco([*args, "--out", str(tmp_path / "a")])
    coco([*args, "--out", str(tmp_path / "again")])
    coco([*args, "--out", str(tmp_path / "b"), "--seed", "1"])
    captions = (tmp_path / "a" / "captions.txt").read_text().splitlines()
    assert captions == (tmp_path / "again" / "captions.txt").read_text().splitlines()
    assert captions != (tmp_path / "b" / "captions.txt").read_text().splitlines()  # another order
    meant = {" ".join(t.split()).replace("|", "/") for t in texts}
    assert {parse_target(c)[0].value for c in captions} == meant and all(len(parse_target(c)) == 1 for c in captions)
    real = read_image_set(tmp_path / "a" / "real", "--real")
    assert real.prompts == captions and all(p.is_file() for p in real.paths)
    with pytest.raises(SystemExit) as exit_:
        coco([*args[:-1], "6", "--out", str(tmp_path / "c")])
    assert exit_.value.code == 2 and capsys.readouterr().err.strip().endswith("the annotations hold 5 captioned images")


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_inception_weights_missing_or_malicious_end_in_one_line(world, tmp_path, monkeypatch, capsys):
    import torchmetrics.utilities.imports

    monkeypatch.setattr(torchmetrics.utilities.imports, "_TORCH_FIDELITY_AVAILABLE", True)  # as if installed
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    evil, marker = tmp_path / "evil.pth", tmp_path / "ran"
    torch.save(_Evil(marker), evil)
    run_dir, real = str(world["quickstart"]), str(world["real"])
    cases = [
        ([], "--features inception needs InceptionV3's weights, not found at"),
        (["--inception-weights", str(evil)], "refused: it holds Python objects that could run code"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as exit_:
            main([run_dir, "--real", real, "--features", "inception", *extra])
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert exit_.value.code == 2 and message in line, line
    assert not marker.exists()


def test_the_toy_real_command_renders_a_runs_captions_and_refuses_others(world, tmp_path, capsys):
    from clip_inversion.toyworld.real import main as real

    real([str(tmp_path / "real"), "--captions", str(world["quickstart"]), "--per-caption", "2"])  # docs/evaluation.md's
    lines = [json.loads(line) for line in (tmp_path / "real" / "manifest.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in lines] == [c for c in CAPTIONS for _ in range(2)]
    (tmp_path / "dog.txt").write_text("a photo of a dog\n")
    with pytest.raises(SystemExit) as exit_:
        real([str(tmp_path / "dog"), "--captions", str(tmp_path / "dog.txt")])
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and "the toy world renders only its colour-shape captions" in line


# The statistics: each test below runs through evaluate() and holds an oracle of its own.


def _relabel(folder: Path, prompts: dict[str, str]) -> Path:
    """Give a folder's images other prompts (``{old: new}``) in its manifest: images of one caption "inverted"
    from another."""
    lines = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    text = "".join(json.dumps({**r, "prompt": prompts.get(r["prompt"], r["prompt"])}) + "\n" for r in lines)
    (folder / "manifest.jsonl").write_text(text)
    return folder


def test_kid_subsets_are_smaller_than_the_sets_and_small_sets_are_flagged(judge, tmp_path):
    real = write_real(CAPTIONS, tmp_path / "real", per_caption=2, seed=0)
    fake = write_real(CAPTIONS, tmp_path / "fake", per_caption=2, seed=1)
    (row,) = evaluate([fake], Settings(real=str(real), bootstrap=0, out=str(tmp_path / "report")), judge)
    # 12 images a side: subsets of the whole sets would all be alike, and their std exactly 0
    assert row["kid_std"] > 1e-5 and row["kid_subset"] == 6
    # 12 images of 64-dimensional features: FID's covariances are singular, and the report says so
    assert "fewer images than dimensions" in row["warning"] and "KID on subsets of 6 images" in row["warning"]
    assert (
        f"- warning: {fake}: FID on 12 generated and 12 real images"
        in (tmp_path / "report" / "evaluation.md").read_text()
    )


def test_fid_and_kid_compare_only_the_prompts_with_real_images(judge, tmp_path):
    real = write_real(CAPTIONS[:3], tmp_path / "real", per_caption=4, seed=0)
    every = write_real(CAPTIONS, tmp_path / "every", per_caption=4, seed=1)
    three = write_real(CAPTIONS[:3], tmp_path / "three", per_caption=4, seed=1)  # the same renders of 3 captions
    settings = Settings(real=str(real), bootstrap=0, out=str(tmp_path / "report"))
    partial, alone = evaluate([every, three], settings, judge)
    assert partial["fid"] == pytest.approx(alone["fid"], rel=1e-5) and partial["kid"] == pytest.approx(alone["kid"])
    assert (partial["compared_prompts"], partial["compared_images"], partial["real_images"]) == (3, 12, 12)
    assert partial["images"] == 24 and partial["candidates"] == 6  # the judge still scores every image


def test_the_fid_interval_resamples_real_and_generated_images_of_the_same_prompts(judge, tmp_path):
    # a "run" of the real images themselves: every paired resample compares a set with itself (FID 0), while
    # resampling the two sides apart compares different prompts' images
    real = write_real(CAPTIONS, tmp_path / "real", per_caption=12, seed=0)
    (row,) = evaluate([real], Settings(real=str(real), bootstrap=20, out=str(tmp_path / "report")), judge)
    assert abs(row["fid"]) < 1e-3 and row["fid_high"] < 1e-2


def test_the_accuracy_interval_resamples_prompts_as_clusters(judge, tmp_path):
    # 6 prompts of 8 images; the images of 3 of them render another of the prompts, so those 3 prompts are
    # wrong on every image: 50% right, but as uncertain as 3 right prompts out of 6, not 24 images out of 48
    fake = write_real(CAPTIONS, tmp_path / "fake", per_caption=8, seed=1)
    _relabel(fake, {CAPTIONS[0]: CAPTIONS[1], CAPTIONS[1]: CAPTIONS[2], CAPTIONS[2]: CAPTIONS[0]})
    (row,) = evaluate([fake], Settings(bootstrap=200, out=str(tmp_path / "report")), judge)
    assert row["accuracy"] == 0.5
    # 48 independent images: Wilson [0.36, 0.64]; 6 prompts: about 0.5 +- 1.96 x 0.2
    assert row["accuracy_low"] < 0.25 and row["accuracy_high"] > 0.75


def test_inception_reads_each_image_at_its_own_size_as_uint8(judge, tmp_path, monkeypatch):
    import torchmetrics.image.fid
    import torchmetrics.utilities.imports
    from torchvision.io import decode_image, write_png

    seen = []

    class Recorder(torch.nn.Module):  # InceptionV3's stand-in: what reaches the network, and any features
        def __init__(self, name, features_list, feature_extractor_weights_path):
            super().__init__()

        def _torch_fidelity_forward(self, x):
            seen.extend(x.cpu())
            return torch.rand(len(x), 16), torch.rand(len(x), 1008)

    monkeypatch.setattr(torchmetrics.utilities.imports, "_TORCH_FIDELITY_AVAILABLE", True)  # as if installed
    monkeypatch.setattr(torchmetrics.image.fid, "NoTrainInceptionV3", Recorder)
    torch.save({"weight": torch.zeros(1)}, tmp_path / "weights.pth")
    real = tmp_path / "real"
    real.mkdir()
    for i, (h, w) in enumerate([(40, 72), (90, 30), (40, 72)]):
        write_png(torch.randint(0, 256, (3, h, w), dtype=torch.uint8), str(real / f"{i}.png"))
    append_records(real, [{"id": str(i), "prompt": CAPTIONS[i], "image": f"{i}.png"} for i in range(3)])
    weights, out = str(tmp_path / "weights.pth"), str(tmp_path / "report")
    settings = Settings(real=str(real), features="inception", inception_weights=weights, bootstrap=0, out=out)
    noise = write_noise(tmp_path / "noise", n=4)  # 64 x 64
    evaluate([noise], settings, judge)
    files = [real / f"{i}.png" for i in range(3)] + sorted(noise.glob("*.png"))
    assert len(seen) == len(files) and all(x.dtype == torch.uint8 for x in seen)
    by_shape = sorted(seen, key=lambda x: x.shape)  # batches group images of one size: compare as multisets
    expected = sorted((decode_image(str(f)) for f in files), key=lambda x: x.shape)
    assert [x.shape for x in by_shape] == [x.shape for x in expected]
    assert sorted(x.sum().item() for x in seen) == sorted(x.sum().item() for x in expected)


def test_the_metrics_command_and_the_evaluation_give_the_same_judge_cosine(judge, tmp_path, capsys):
    from clip_inversion.studies.metrics import main as metrics

    run_dir = tmp_path / "run"  # images of another shape than the judge's input
    generator = torch.Generator().manual_seed(0)
    for i in range(len(CAPTIONS)):
        atomic_save_image(torch.rand(3, 48, 96, generator=generator), run_dir / f"{i}.png")
    append_records(run_dir, [{"id": str(i), "prompt": c, "image": f"{i}.png"} for i, c in enumerate(CAPTIONS)])
    (row,) = evaluate([run_dir], Settings(bootstrap=0, out=str(tmp_path / "report")), judge)
    assert row["clipsim"] == pytest.approx(100 * score_run(run_dir, judge)["judge_cosine"], abs=1e-4)
    metrics([str(run_dir)])
    printed = json.loads(capsys.readouterr().out)
    assert printed["judge_cosine"] == pytest.approx(row["clipsim"] / 100, abs=1e-6)
    assert printed["judge_among"] == 6 and row["candidates"] == 6


def test_accuracy_with_resamples_that_do_not_vary_counts_prompts_as_the_trials():
    from clip_inversion.studies.probes import wilson_interval
    from clip_inversion.studies.statistics import accuracy_interval, kid_subset_size, resample_prompts

    drawn = resample_prompts(6, 100, seed=0)
    assert torch.equal(drawn, resample_prompts(6, 100, seed=0)) and drawn.shape == (100, 6)
    all_right = accuracy_interval(torch.full((6,), 4.0), torch.full((6,), 4.0), drawn)
    assert all_right == wilson_interval(6, 6)  # 6 prompts right, not 24 images
    assert accuracy_interval(torch.full((6,), 4.0), torch.full((6,), 4.0), drawn[:0]) == all_right  # no bootstrap
    assert kid_subset_size(5000, 3000) == 1000 and kid_subset_size(40, 9) == 4


def test_the_toy_real_command_renders_world_b_when_asked(tmp_path):
    from clip_inversion.data import prompt_seed
    from clip_inversion.toyworld.clutter import ClutterWorld
    from clip_inversion.toyworld.real import main as real

    (tmp_path / "captions.txt").write_text("a blue star\n")
    real([str(tmp_path / "b"), "--captions", str(tmp_path / "captions.txt"), "--world", "b"])
    line = (tmp_path / "b" / "manifest.jsonl").read_text().splitlines()[0]
    images, _, _ = ClutterWorld(64, ("blue",), ("star",)).batch(4, seed=prompt_seed(0, "a blue star"))
    atomic_save_image(images[0], tmp_path / "oracle.png")  # world B's own renderer, built by its constructor
    assert (tmp_path / "b" / json.loads(line)["image"]).read_bytes() == (tmp_path / "oracle.png").read_bytes()
