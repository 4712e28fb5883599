"""Prompt files, ids, seeds and the sweep plan."""

import json

import pytest

from clip_inversion.data import Prompt, PromptDataModule, plan, prompt_seed, read_prompts


def test_text_jsonl_and_csv_files(tmp_path):
    (tmp_path / "p.txt").write_text("a red star\n\n# a comment\n  a blue cross  \n", encoding="utf-8")
    (tmp_path / "p.jsonl").write_text(
        '{"id": "s1", "prompt": "a red star", "seed": 7, "tags": ["colour"]}\n\n{"prompt": "a blue cross"}\n'
    )
    (tmp_path / "p.csv").write_text("id,prompt,seed,tags\ns1,a red star,7,colour;warm\ns2,a blue cross,,\n")
    text = read_prompts(tmp_path / "p.txt", base_seed=3)
    assert [(p.id, p.text) for p in text] == [("00000", "a red star"), ("00001", "a blue cross")]
    assert text[0].seed == prompt_seed(3, "00000") != prompt_seed(4, "00000")
    jsonl = read_prompts(tmp_path / "p.jsonl")
    assert (jsonl[0].id, jsonl[0].seed, jsonl[0].tags) == ("s1", 7, ["colour"])
    assert jsonl[1].id == "00001" and jsonl[1].seed == prompt_seed(0, "00001")
    csv = read_prompts(tmp_path / "p.csv")
    assert (csv[0].id, csv[0].seed, csv[0].tags) == ("s1", 7, ["colour", "warm"])
    assert (csv[1].id, csv[1].seed, csv[1].tags) == ("s2", prompt_seed(0, "s2"), [])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "not found"),
        ("empty.txt", "\n  \n# only a comment\n", "holds no prompt"),
        ("latin1.txt", "a red star\ncaf\xe9\n".encode("latin-1"), r"latin1.txt:2: not valid UTF-8"),
        ("bad.jsonl", '{"prompt": "a"}\n{"prompt": \n', r"bad.jsonl:2: not valid JSON"),
        ("list.jsonl", '["a red star"]\n', r"list.jsonl:1: expected a JSON object"),
        ("noprompt.jsonl", '{"id": "x"}\n', r"noprompt.jsonl:1: empty or missing prompt"),
        ("field.jsonl", '{"prompt": "a", "colour": "red"}\n', r"field.jsonl:1: unknown field"),
        ("seed.jsonl", '{"prompt": "a", "seed": "soon"}\n', r"seed.jsonl:1: seed 'soon' is not an integer"),
        ("id.jsonl", '{"prompt": "a", "id": "../x"}\n', r"id.jsonl:1: id '../x' must be"),
        ("twice.jsonl", '{"prompt": "a", "id": "x"}\n{"prompt": "b", "id": "x"}\n', "used twice"),
        ("header.csv", "text\na red star\n", r"header.csv:1: the CSV header needs a 'prompt' column"),
        ("columns.csv", "prompt,seed\na red star,1,extra\n", r"columns.csv:2: expected 2 columns"),
    ],
)
def test_bad_prompt_files_name_file_and_line(tmp_path, name, content, message):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        read_prompts(path)


def prompts(n: int) -> list[Prompt]:
    return [Prompt(f"{i:05d}", f"prompt {i}", i) for i in range(n)]


def test_plan_shards_every_prompt_exactly_once_with_equal_epochs():
    everything = prompts(10)
    per_rank = [plan(everything, batch_size=2, world_size=3, rank=r) for r in range(3)]
    assert {len(p) for p in per_rank} == {2}  # ceil(10 / 6) epochs on every rank
    written = [i for p in per_rank for b in p for i, ok in zip(b.ids, b.pending) if ok]
    assert sorted(written) == [p.id for p in everything]
    last = per_rank[2][1]  # rank 2 has nothing left in the last epoch: one padding prompt, not written
    assert last.ids == ["00006"] and last.pending == [False]
    # the same batches as a one-process run with the same batch size
    single = plan(everything, batch_size=2, world_size=1, rank=0)
    assert [b.ids for b in single[:3]] == [per_rank[r][0].ids for r in range(3)]


def test_plan_skips_finished_work():
    everything = prompts(6)
    done = {(p.id, p.text) for p in everything[:4]} | {("00005", "prompt 5")}
    batches = plan(everything, batch_size=2, world_size=1, rank=0, done=done)
    assert [b.skip for b in batches] == [True, True, False]
    assert batches[2].pending == [True, False]


def test_inline_and_file_prompts_get_distinct_ids(tmp_path):
    (tmp_path / "p.txt").write_text("a blue cross\n")
    data = PromptDataModule(prompts=["a red star"], prompts_file=str(tmp_path / "p.txt"))
    assert [(p.id, p.text) for p in data.all_prompts()] == [("00000", "a red star"), ("00001", "a blue cross")]
    with pytest.raises(ValueError, match="empty"):
        PromptDataModule(prompts=["a red star", "  "]).all_prompts()
    with pytest.raises(ValueError, match="no prompts"):
        PromptDataModule().all_prompts()


def test_a_large_file_is_planned_into_equal_batches(tmp_path):
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"a photo of thing {i}"}) + "\n" for i in range(10_000)))
    batches = plan(read_prompts(path), batch_size=16, world_size=8, rank=3)
    assert len(batches) == 79 and all(len(b) == 16 for b in batches[:-1])
