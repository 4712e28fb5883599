"""The family protocol's plumbing (benchmarks/compare_worlds.py) with stub worlds and stub scores: it chooses on
tuning worlds before it reports, never runs a fresh world while choosing, and pools worlds as it says."""

import sys
import threading
import time
from pathlib import Path

import pytest
from scipy import stats

ROOT = Path(__file__).parents[1]
CAPTIONS = [f"caption {i}" for i in range(30)]


@pytest.fixture
def compare(benchmark):
    return benchmark("compare_worlds")


def stub_record(world):
    tower = {"label": "ResNet"}
    accuracy = {"held_out_template": {"caption": 0.95}, "judge_template": {"caption": 0.96}}
    return {
        "world": {"world_seed": world, "style": "flat", "image_size": 32},
        "subject": {"tower": tower, "accuracy": accuracy},
        "judge": {"tower": {"label": "ViT-8/64x3"}, "accuracy": accuracy},
    }


def right_captions(recipe, world, seed):
    """Stub scores: every-aug-32 reads 20 captions right, das 12 on tuning worlds (and 25 on fresh ones, where it is
    never run); the released settings 10 on world 100, 5 elsewhere; the others 8; seed 1 one more."""
    if recipe == "released-64px":
        return (10 if world == "w100" else 5) + seed
    right = {"every-aug-32": 20, "das": 12}.get(recipe, 8)
    return right + seed


@pytest.fixture
def stubbed(compare, monkeypatch):
    calls = []

    def judge_world(seed, config, args, world, per_caption, keep=None, captions=None):
        recipe, name = Path(args[1]).stem, f"w{world.world}"
        calls.append((recipe, name, seed))
        right = right_captions(recipe, name, seed)
        per = {c: {"colour": 1.0, "caption": float(i < right), "judge_cosine": 0.5} for i, c in enumerate(CAPTIONS)}
        return {"caption": right / 30, "judge_cosine": 0.5, "per_caption": per}, 1.0

    class Toy:
        def __init__(self, world):
            self.world = world

    trained = set()
    monkeypatch.setattr(sys.modules["compare_recipes"], "judge_world", judge_world)
    monkeypatch.setattr(compare, "read_world", lambda cache, w: stub_record(w) if w in trained else None)

    def train_world(w, cache):  # the real one answers from the cache unless the recipe changed (test_family)
        cached = w in trained
        trained.add(w)
        return {**stub_record(w), "cached": cached}

    monkeypatch.setattr(compare, "train_world", train_world)
    monkeypatch.setattr(compare, "toy_world", lambda cache, w: Toy(w))
    return calls


def test_it_chooses_on_tuning_worlds_then_reports_only_the_chosen_and_released_on_fresh_ones(
    compare, stubbed, monkeypatch, tmp_path, capsys
):
    argv = ["compare_worlds.py", "--candidates", "das", "every-aug-32", "quickstart-5200", "--tune-worlds", "0", "1"]
    argv += ["--fresh-worlds", "100", "101", "102", "--report-seeds", "0", "1", "--out", str(tmp_path / "out")]
    monkeypatch.setattr("sys.argv", [*argv, "--cache", str(tmp_path / "cache")])
    compare.main()
    out = capsys.readouterr().out
    tuning = [c for c in stubbed if c[1] in ("w0", "w1")]
    assert stubbed[: len(tuning)] == tuning and len(tuning) == 6  # every candidate on every tuning world, first
    assert {c[0] for c in tuning} == {"das", "every-aug-32", "quickstart-5200"}  # the baseline is not chosen among
    fresh = stubbed[len(tuning) :]
    assert {c[0] for c in fresh} == {"released-64px", "every-aug-32"} and len(fresh) == 12
    assert "- chosen on tuning worlds 0, 1: every-aug-32" in out
    row = next(line for line in out.splitlines() if line.startswith("| 100 |")).split(" | ")
    assert row[1:4] == ["ResNet", "ViT-8/64x3", "flat, 32 px"] and row[4] == "96.0%"
    assert row[5] == "35%" and row[6] == "68%"  # 10.5 and 20.5 of 30 captions over two seeds
    assert row[7].startswith("+33 [")  # 10 of 30 captions gain on both seeds
    assert next(line for line in out.splitlines() if line.startswith("| 101 |")).split(" | ")[7].startswith("+50 [")
    # pooled over worlds: the mean of +33, +50, +50 and its bootstrap over worlds
    assert "pooled over 3 of 3 fresh worlds: chosen minus released +44 [+33, +50]" in out
    assert (
        "at least +15 points on 3 of 3 worlds" in out
        and "(+15 on 3 of 3 worlds, pooled lower end above +10): reached" in out
    )
    # a rerun runs nothing, and --no-run prints the same
    stubbed.clear()
    compare.main()
    assert stubbed == []
    monkeypatch.setattr("sys.argv", [*argv, "--cache", str(tmp_path / "cache"), "--no-run"])
    compare.main()

    def tables(text):  # the tables and verdicts, without the runs' progress lines
        return [line for line in text.splitlines() if line.startswith(("|", "- "))]

    assert stubbed == [] and tables(capsys.readouterr().out) == tables(out) * 2


def test_nothing_is_reported_before_every_candidate_has_every_tuning_run(
    compare, stubbed, monkeypatch, tmp_path, capsys
):
    argv = ["compare_worlds.py", "--candidates", "das", "every-aug-32", "--tune-worlds", "0", "1", "--no-run"]
    monkeypatch.setattr("sys.argv", [*argv, "--out", str(tmp_path), "--cache", str(tmp_path)])
    compare.main()
    assert stubbed == [] and "nothing chosen, no fresh world run" in capsys.readouterr().out
    argv = ["compare_worlds.py", "--tune-worlds", "0", "100", "--fresh-worlds", "100", "101", "--no-run"]
    monkeypatch.setattr("sys.argv", [*argv, "--out", str(tmp_path), "--cache", str(tmp_path)])  # never runs/
    with pytest.raises(SystemExit):
        compare.main()


def test_the_pooled_interval_is_a_bootstrap_over_worlds(compare):
    assert compare.world_interval([0.2] * 10) == pytest.approx((0.2, 0.2, 0.2))
    diffs = [0.05, 0.1, 0.3, 0.32, 0.4, 0.18, 0.22, 0.27, 0.5, -0.1]
    mean, low, high = compare.world_interval(diffs)
    oracle = stats.bootstrap((diffs,), statistic=lambda x: sum(x) / len(x), n_resamples=10_000, method="percentile",
                             random_state=1).confidence_interval  # fmt: skip
    assert mean == pytest.approx(sum(diffs) / 10)
    assert low == pytest.approx(oracle.low, abs=0.01) and high == pytest.approx(oracle.high, abs=0.01)


def test_two_jobs_side_by_side_share_the_work_and_print_the_same_tables(
    compare, stubbed, monkeypatch, tmp_path, capsys
):
    argv = ["compare_worlds.py", "--candidates", "das", "every-aug-32", "--tune-worlds", "0", "1", "--fresh-worlds"]
    argv += ["100", "101", "--report-seeds", "0", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    monkeypatch.setattr("sys.argv", argv)
    slow = sys.modules["compare_recipes"].judge_world
    done = {}

    def judge_world(*args, **kwargs):  # a run that takes a while, so that both jobs are busy at once
        time.sleep(0.05)
        done.setdefault(threading.get_ident(), 0)
        done[threading.get_ident()] += 1
        return slow(*args, **kwargs)

    monkeypatch.setattr(sys.modules["compare_recipes"], "judge_world", judge_world)
    monkeypatch.setattr(compare, "POLL_SECONDS", 0.01)
    failed = []

    def job():
        try:
            compare.main()
        except BaseException as e:  # a job that reads a run half-written, say
            failed.append(e)

    jobs = [threading.Thread(target=job) for _ in range(2)]
    for j in jobs:
        j.start()
    for j in jobs:
        j.join()
    assert failed == []
    assert sorted(stubbed) == sorted(set(stubbed)) and len(stubbed) == 4 + 4  # each run once, none left out
    assert len(done) == 2 and min(done.values()) >= 2  # both jobs ran some
    out = capsys.readouterr().out
    assert out.count("- chosen on tuning worlds 0, 1: every-aug-32") == 2  # neither chose before the other's runs
    assert out.count("pooled over 2 of 2 fresh worlds") == 2


def test_only_the_finalists_of_the_screening_worlds_go_on_to_the_other_tuning_worlds(
    compare, stubbed, monkeypatch, tmp_path, capsys
):
    argv = ["compare_worlds.py", "--candidates", "implicit", "das", "every-aug-32", "quickstart-5200"]
    argv += ["--tune-worlds", "0", "1", "2", "--screen-worlds", "1", "--finalists", "2", "--fresh-worlds", "100"]
    argv += ["--report-seeds", "0", "--out", str(tmp_path / "out"), "--cache", str(tmp_path / "cache")]
    monkeypatch.setattr("sys.argv", argv)
    compare.main()
    out = capsys.readouterr().out
    on = {w: {c[0] for c in stubbed if c[1] == w} for w in ("w0", "w1", "w2")}
    assert on["w0"] == {"implicit", "das", "every-aug-32", "quickstart-5200"}
    assert on["w1"] == on["w2"] == {"every-aug-32", "das"}  # the two best on world 0 (20 and 12 of 30 right)
    assert "- finalists on tuning worlds 0: every-aug-32, das" in out
    assert "- chosen on tuning worlds 0, 1, 2: every-aug-32" in out
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[2:] for line in out.splitlines() if line.startswith("| ")}
    assert rows["implicit"] == ["27%", "-", "-", "27%", "- |"]  # screened out: no mean over every tuning world
    assert rows["das"] == ["40%", "40%", "40%", "40%", "40% |"]


def test_a_stored_world_goes_through_train_world_which_trains_it_again_after_a_recipe_change(
    compare, monkeypatch, tmp_path
):
    calls = []
    monkeypatch.setattr(compare, "read_world", lambda cache, w: stub_record(w))  # stored, with some recipe
    monkeypatch.setattr(compare, "train_world", lambda w, cache: calls.append(w) or {**stub_record(w), "cached": 0})
    assert compare.ensure_world(tmp_path, 3, None, run=True)["world"]["world_seed"] == 3 and calls == [3]
    assert compare.ensure_world(tmp_path, 3, None, run=False)["world"]["world_seed"] == 3 and calls == [3]


def test_worlds_already_trained_are_run_first(compare, stubbed, monkeypatch, tmp_path):
    compare.train_world(101, tmp_path)  # the stub's cache now holds world 101 alone
    argv = ["compare_worlds.py", "--candidates", "das", "--tune-worlds", "0", "--fresh-worlds", "100", "101"]
    monkeypatch.setattr("sys.argv", [*argv, "--report-seeds", "0", "--out", str(tmp_path), "--cache", str(tmp_path)])
    compare.main()
    fresh = [c[1] for c in stubbed if c[1] != "w0"]
    assert fresh == ["w101", "w101", "w100", "w100"]
