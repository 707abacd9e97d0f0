"""Local evaluation data converted for lm-eval's built-in tasks (mtlm_recipes/eval/local_tasks.py).

The converted rows are fed to lm-eval's own task objects, and the prompts, choices and targets lm-eval builds
from them are compared with the strings the local copies hold.
"""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the `eval` extra: pip install -e '.[eval]'")
from mtlm_recipes.eval import local_tasks  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "eval"
SHARED_DATA = ROOT.parent / "shared" / "data"


def _jsonl(relative: str, data_dir: Path = DATA) -> list[dict]:
    return [json.loads(line) for line in (data_dir / relative).read_text().splitlines()]


@pytest.fixture(scope="module")
def lm_eval_tasks(tmp_path_factory):
    """Every benchmark converted from tests/data/eval and loaded as lm-eval task objects."""
    from lm_eval.tasks import TaskManager

    work = tmp_path_factory.mktemp("work")
    for benchmark in local_tasks.BENCHMARKS:
        local_tasks.write_local_task(benchmark, DATA, work)
    manager = TaskManager(include_path=str(work / "tasks"), include_defaults=False)
    return manager.load([b.task for b in local_tasks.BENCHMARKS])["tasks"]


def _rendered(task) -> list[tuple]:
    return [(task.doc_to_text(doc), task.doc_to_choice(doc), task.doc_to_target(doc)) for doc in task.eval_docs]


def test_winogrande_rows_give_back_llm_foundrys_partial_scoring_strings(lm_eval_tasks):
    expected = _jsonl("winogrande/llmfoundry_winogrande.jsonl")
    rendered = _rendered(lm_eval_tasks["winogrande"])
    assert [(choices, target) for _, choices, target in rendered] == [
        (item["context_options"], item["continuation"]) for item in expected
    ]
    assert [gold for gold, _, _ in rendered] == [item["gold"] for item in expected]


def test_copa_prompt_has_no_comma_as_lm_eval_builds_it(lm_eval_tasks):
    text, choices, target = _rendered(lm_eval_tasks["copa"])[0]
    assert text == "The man turned on the faucet therefore"
    assert choices == [" the toilet filled with water.", " water flowed from the spout."]
    assert target == " water flowed from the spout."


def test_boolq_prompt_is_the_local_query_with_lm_evals_answer_cue(lm_eval_tasks):
    expected = _jsonl("boolq/llmfoundry_boolq.jsonl")
    rendered = _rendered(lm_eval_tasks["boolq"])
    assert [text for text, _, _ in rendered] == [
        item["query"].removeprefix("Passage: ") + "\nAnswer:" for item in expected
    ]
    assert [target for _, _, target in rendered] == [item["gold"] for item in expected]


def test_wsc273_from_xml_matches_llm_foundry_except_its_shortened_options(lm_eval_tasks):
    expected = _jsonl("wsc273/llmfoundry_winograd_wsc.jsonl")
    rendered = _rendered(lm_eval_tasks["wsc273"])
    for (label, choices, continuation), item in zip(rendered, expected, strict=True):
        assert label == item["gold"]
        assert continuation.strip() == item["continuation"]
        prefix = choices[0][: len(choices[0]) - len(choices[0].split(" because ")[-1])]
        assert all(option.startswith(prefix) for option in item["context_options"])
    assert rendered[0][1] == expected[0]["context_options"]
    # The XML (and the Hub builder) says "the brown suitcase"; llm-foundry's copy shortened it.
    assert rendered[2][1][1].endswith("because the brown suitcase")
    assert expected[2]["context_options"][1].endswith("because the suitcase")


def test_superglue_wsc_gets_the_hubs_span_repair(lm_eval_tasks):
    source = _jsonl("wsc_superglue/val.jsonl")
    assert source[4]["target"]["span1_text"] == "The table"  # not in the text, which says "the table"
    rows = local_tasks.convert_superglue_wsc(DATA / "wsc_superglue/val.jsonl")
    assert rows[4]["span1_text"] == "the table" and all(row["span1_text"] in row["text"] for row in rows)
    text, choices, target = _rendered(lm_eval_tasks["wsc"])[4]
    assert 'does the pronoun "*it*" refer to "*the table*"?' in text
    assert (choices, target) == (["no", "yes"], 1)


def test_truthfulqa_choices_keep_the_files_order_with_the_true_answer_first(lm_eval_tasks):
    questions = json.loads((DATA / "truthfulqa/mc_task.json").read_text())
    for name, key in (("truthfulqa_mc1", "mc1_targets"), ("truthfulqa_mc2", "mc2_targets")):
        rendered = _rendered(lm_eval_tasks[name])
        assert [choices for _, choices, _ in rendered] == [list(q[key]) for q in questions]
        assert all(
            text.endswith(f"Q: {q['question']}\nA:") for (text, _, _), q in zip(rendered, questions, strict=True)
        )


@pytest.mark.parametrize(
    ("task", "source", "prompt"),
    [
        ("arc_easy", "arc/llmfoundry_arc_easy.jsonl", lambda q: q + "\nAnswer:"),
        ("arc_challenge", "arc/llmfoundry_arc_challenge.jsonl", lambda q: q + "\nAnswer:"),
        ("openbookqa", "openbookqa/llmfoundry_openbook_qa.jsonl", lambda q: q),
    ],
)
def test_multiple_choice_items_keep_question_choices_and_answer(lm_eval_tasks, task, source, prompt):
    expected = _jsonl(source)
    assert _rendered(lm_eval_tasks[task]) == [
        (prompt(item["query"]), item["choices"], item["gold"]) for item in expected
    ]


def test_hellaswag_context_and_endings_are_read_as_given(lm_eval_tasks):
    text, choices, target = _rendered(lm_eval_tasks["hellaswag"])[0]
    assert text == "Roof shingle removal: A man is sitting on a roof. he"
    assert choices[3] == "starts pulling up roofing on a roof." and target == 3


def test_aqua_query_is_agievals_zero_shot_prompt(lm_eval_tasks):
    item = _jsonl("aqua/agieval-v1-aqua-rat.jsonl")[0]
    text, choices, target = _rendered(lm_eval_tasks["agieval_aqua_rat"])[0]
    assert text == (
        f"Q: {item['question']} Answer Choices: {' '.join(item['options'])}\nA: Among A through E, the answer is"
    )
    assert choices == item["options"] and target == ["ABCDE".index(item["label"])]


def test_commonsense_qa_is_read_as_is(lm_eval_tasks):
    text, choices, target = _rendered(lm_eval_tasks["commonsense_qa"])[0]
    assert text.startswith("Question: A revolving door is convenient") and text.endswith("E. new york\nAnswer:")
    assert (choices, target) == (["A", "B", "C", "D", "E"], "A")


def test_task_yamls_name_only_local_files(tmp_path):
    import yaml

    for benchmark in local_tasks.BENCHMARKS:
        record = local_tasks.write_local_task(benchmark, DATA, tmp_path)
        config = yaml.safe_load(Path(record["task_yaml"]).read_text())
        assert config["dataset_path"] == "json" and config["dataset_name"] is None
        (data_file,) = config["dataset_kwargs"]["data_files"].values()
        assert Path(data_file).is_file() and Path(config["include"]).is_file()
        assert Path(config["include"]).is_relative_to(local_tasks.LM_EVAL_TASKS)


def test_missing_source_file_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"copa/llmfoundry_copa.jsonl.*--data-dir"):
        local_tasks.write_local_task(local_tasks.BENCHMARKS[1], tmp_path, tmp_path / "work")


# Item counts and sha256 from ../shared/data/SOURCES.md.
FULL_SETS = {
    "winogrande": (1267, "ea1592526f3bfdd0948ed3acb1b4dfa3f83d23698917118688ee1df7f8d4b8d7"),
    "copa": (100, "595dca44dec54c849490bd403a3e24a29e3b944065783222ebb0eb1a55298846"),
    "boolq": (3270, "454ff101e614370bb1807fe7ebbda6fdb57e794b9662cc1ccae211bf1ff626c8"),
    "wsc273": (273, "8d72fe16331cfcddfc2f8ec6f87c5a07e186f913e023705a998a5cc6011994e4"),
    "wsc": (104, "e5c685ea4bdc347354036a28176459f6feeb0b6870375ecfb3d6ddb1f0e28bef"),
    "truthfulqa_mc1": (817, "6eb4125d25750c0145c4be2dce00440736684ab6f74ce6bff2139571cc758954"),
    "truthfulqa_mc2": (817, "6eb4125d25750c0145c4be2dce00440736684ab6f74ce6bff2139571cc758954"),
    "arc_easy": (2376, "d2d12e59543acf9a5ef6079634a72b30215e36c2fd4236fff3bc855d287b87f5"),
    "arc_challenge": (1172, "1ae3aeedf1951d881cbd5c2e3a31e78a1993d251479afbe4cb413b6707244636"),
    "openbookqa": (500, "adb2e5c7f8db810ddad4d6b2bf53dcc86dcc545499f7aafcaf42a8e179476c09"),
    "hellaswag": (10042, "50b637899e4263c2bc456c2dc726c95d2c8cd8e2a552ea5bd7719ce3cb03fe5b"),
    "agieval_aqua_rat": (254, "cff42e946e6082dacb27285dae19cb4be98408ab760fe43c6c462e543be50572"),
    "commonsense_qa": (1221, "4c036e81eec3cb86477bc1b97c21c56aa17d92ab9f8537c855dc0cf724b05fe0"),
}


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the full evaluation sets live in ../shared/data (dev and CI)")
def test_full_sets_convert_with_the_documented_counts_and_checksums(tmp_path):
    records = {b.task: local_tasks.write_local_task(b, SHARED_DATA, tmp_path) for b in local_tasks.BENCHMARKS}
    assert {task: (r["rows"], r["source_sha256"]) for task, r in records.items()} == FULL_SETS

    wsc = [json.loads(line) for line in (tmp_path / "data/wsc.jsonl").read_text().splitlines()]
    assert all(row["span1_text"] in row["text"] and row["span2_text"] in row["text"] for row in wsc)
    assert sum(row["label"] for row in wsc) == 38  # SOURCES.md: 104 items, 38 true


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="the full evaluation sets live in ../shared/data (dev and CI)")
def test_full_wsc273_agrees_with_llm_foundry_but_for_130_shortened_option_pairs():
    import datasets

    spec = importlib.util.spec_from_file_location("wsc273_utils", local_tasks.LM_EVAL_TASKS / "wsc273/utils.py")
    wsc273_utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(wsc273_utils)
    rows = local_tasks.convert_wsc273(SHARED_DATA / "wsc273/WSCollection.xml")
    docs = wsc273_utils.process_doc(datasets.Dataset.from_list(rows))
    reference = _jsonl("wsc273/llmfoundry_winograd_wsc.jsonl", SHARED_DATA)
    differing_options = 0
    for doc, item in zip(docs, reference, strict=True):
        prefix = doc["text"][: doc["pronoun_loc"]]
        assert doc["label"] == item["gold"]
        assert doc["text"][doc["pronoun_loc"] + len(doc["pronoun"]) :].strip() == item["continuation"]
        assert all(option.startswith(prefix) for option in item["context_options"])
        differing_options += [prefix + option for option in doc["options"]] != item["context_options"]
    assert differing_options == 130
