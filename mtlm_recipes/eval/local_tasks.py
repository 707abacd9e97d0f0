"""The card's zero-shot benchmarks as lm-evaluation-harness tasks that read local files.

Each benchmark keeps lm-eval's own built-in task config (prompt, choices, metrics); only the data source changes. The
local copies (see `SOURCES.md` of the data folder) are converted into the schema of the Hub dataset that the
built-in task reads, written as JSON Lines, and a task YAML is written that `include`s the built-in config and
points `dataset_path: json` at the converted file. Where a local copy cannot give back the Hub data exactly, the
benchmark's `deviations` say how it differs; `prompts_identical` says whether the strings lm-eval scores are,
by construction, those it would score on the Hub data.

The converters are written by hand because no library reads these foreign formats (llm-foundry's pre-rendered
JSONL, the Winograd XML, llama.cpp's HellaSwag text) back into the Hub schemas.
"""

import bz2
import hashlib
import importlib.util
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..errors import InputFileError

# Located without importing lm_eval: importing it pulls in `datasets`, which reads HF_DATASETS_OFFLINE once, at import.
LM_EVAL_TASKS = Path(importlib.util.find_spec("lm_eval").origin).parent / "tasks"


@dataclass(frozen=True)
class LocalBenchmark:
    """One benchmark of the card: a built-in lm-eval task fed from a local file.

    Attributes:
        task: lm-eval's task name (also the name of the task we register).
        builtin_yaml: the built-in task config, relative to `lm_eval/tasks/`.
        source: the local file, relative to the data folder.
        split: the split lm-eval evaluates (`test` if the built-in config names one, else `validation`).
        convert: reads `source` and returns rows in the Hub schema the built-in task reads.
        hub_dataset: the Hub dataset the built-in task reads (`path`, `name`), for the model card.
        deviations: how the rows differ from the Hub data; empty when they do not.
        prompts_identical: whether the strings lm-eval scores equal those it scores on the Hub data.
        added_metrics: metrics added to the built-in `metric_list` (lm-eval computes them from the same
            log-likelihoods; `acc` is unchanged).
    """

    task: str
    builtin_yaml: str
    source: str
    split: str
    convert: Callable[[Path], list[dict]]
    hub_dataset: dict
    deviations: tuple[str, ...] = ()
    prompts_identical: bool = True
    added_metrics: tuple[str, ...] = ()


def _read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


# Converters: local file -> rows in the Hub schema of the built-in task.


def convert_winogrande(path: Path) -> list[dict]:
    """llm-foundry `{context_options, continuation, gold}` -> `allenai/winogrande` rows."""
    rows = []
    for i, item in enumerate(_read_jsonl(path)):
        first, second = item["context_options"]
        cut = 0
        while cut < min(len(first), len(second)) and first[cut] == second[cut]:
            cut += 1
        # lm-eval scores sentence[:idx] + option against sentence[idx + 1:].strip(); any cut gives the same strings.
        rows.append(
            {
                "sentence": f"{first[:cut]}_ {item['continuation']}",
                "option1": first[cut:],
                "option2": second[cut:],
                "answer": str(item["gold"] + 1),
                "idx": i,
            }
        )
    return rows


def convert_copa(path: Path) -> list[dict]:
    """llm-foundry `{query: "<premise without its final mark>, because|therefore", choices, gold}` -> SuperGLUE COPA."""
    rows = []
    for i, item in enumerate(_read_jsonl(path)):
        premise, connector = item["query"].rsplit(", ", 1)
        question = {"because": "cause", "therefore": "effect"}[connector]
        choice1, choice2 = item["choices"]
        row = {"premise": f"{premise}.", "choice1": choice1, "choice2": choice2, "question": question}
        rows.append(row | {"idx": i, "label": item["gold"]})
    return rows


def convert_boolq(path: Path) -> list[dict]:
    """llm-foundry `{query: "Passage: <p>\\nQuestion: <q>?", gold}` -> SuperGLUE BoolQ (passage without title)."""
    rows = []
    for i, item in enumerate(_read_jsonl(path)):
        # One passage quotes "\nQuestion: " itself: split at the last one.
        passage, question = item["query"].removeprefix("Passage: ").rsplit("\nQuestion: ", 1)
        rows.append({"question": question.removesuffix("?"), "passage": passage, "idx": i, "label": item["gold"]})
    return rows


def _squash_whitespace(text: str | None) -> str:
    return " ".join((text or "").split())


def convert_wsc273(path: Path) -> list[dict]:
    """The Winograd Schema Collection XML -> `winograd_wsc` config `wsc273` (its first 273 schemas).

    Field for field what the Hub builder computes from the same XML (whitespace squashed, pronoun_loc the character
    offset of the pronoun, label 1 when the correct answer names B).
    """
    rows = []
    for schema in list(ET.parse(path).getroot())[:273]:
        text, quote = schema.find("text"), schema.find("quote")
        left, right = _squash_whitespace(text.findtext("txt1")), _squash_whitespace(text.findtext("txt2"))
        quote_left = _squash_whitespace(quote.findtext("quote1"))
        quote_right = _squash_whitespace(quote.findtext("quote2"))
        pronoun = _squash_whitespace(text.findtext("pron"))
        pronoun_loc = len(left) + 1 if left else 0
        rows.append(
            {
                "text": " ".join([left, pronoun, right]).strip(),
                "pronoun": pronoun,
                "pronoun_loc": pronoun_loc,
                "quote": " ".join([quote_left, pronoun, quote_right]).strip(),
                "quote_loc": pronoun_loc - (len(quote_left) + 1 if quote_left else 0),
                "options": [_squash_whitespace(answer.text) for answer in schema.find("answers").findall("answer")],
                "label": int("B" in _squash_whitespace(schema.findtext("correctAnswer"))),
                "source": _squash_whitespace(schema.findtext("source")),
            }
        )
    return rows


def _fix_wsc_span(row: dict, key: str) -> None:
    """The span repair of the Hub's `super_glue` config `wsc.fixed`, which lm-eval's `wsc` reads.

    Spans that are not substrings of the text get the case of the word they start at, lose trailing periods and
    newlines. (The Hub builder's `"theyscold"` repair also sets span2_index to 10 and leaves the text unchanged.)
    """
    span = row[f"{key}_text"]
    if span in row["text"] or span in ("Kamenev and Zinoviev", "Kamenev, Zinoviev, and Stalin"):
        return
    if "theyscold" in span:
        row["span2_index"] = 10
    first_word = row["text"].split()[row[f"{key}_index"]]
    span = (span[0].lower() if first_word[0].islower() else span[0].upper()) + span[1:]
    row[f"{key}_text"] = span.rstrip(".").replace("\n", " ")


def convert_superglue_wsc(path: Path) -> list[dict]:
    """Original SuperGLUE WSC JSONL (`target` nested, boolean label) -> `super_glue` config `wsc.fixed`."""
    rows = []
    for item in _read_jsonl(path):
        row = {"text": item["text"], **item["target"], "idx": item["idx"], "label": int(item["label"])}
        _fix_wsc_span(row, "span1")
        _fix_wsc_span(row, "span2")
        rows.append(row)
    return rows


def convert_truthfulqa(path: Path) -> list[dict]:
    """`mc_task.json` (answer -> label dicts) -> `truthful_qa` config `multiple_choice`, in the file's order."""
    items = json.loads(path.read_text(encoding="utf-8"))
    return [
        {
            "question": item["question"],
            **{
                key: {"choices": list(item[key]), "labels": list(item[key].values())}
                for key in ("mc1_targets", "mc2_targets")
            },
        }
        for item in items
    ]


def _arc_like(path: Path, question_key: str, strip_prefix: str) -> list[dict]:
    rows = []
    for i, item in enumerate(_read_jsonl(path)):
        labels = _letters(len(item["choices"]))
        rows.append(
            {
                "id": str(i),
                question_key: item["query"].removeprefix(strip_prefix),
                "choices": {"text": item["choices"], "label": labels},
                "answerKey": labels[item["gold"]],
            }
        )
    return rows


def convert_arc(path: Path) -> list[dict]:
    """llm-foundry `{query: "Question: <q>", choices, gold}` -> `allenai/ai2_arc`."""
    return _arc_like(path, "question", "Question: ")


def convert_openbookqa(path: Path) -> list[dict]:
    """llm-foundry `{query: <question_stem>, choices, gold}` -> `allenai/openbookqa` config `main`."""
    return _arc_like(path, "question_stem", "")


def convert_hellaswag(path: Path) -> list[dict]:
    """llama.cpp's HellaSwag text (6 lines an item: context, gold index, 4 endings) -> `Rowan/hellaswag`.

    The context line is `activity_label + ": " + ctx`, already preprocessed; it goes into `ctx_a` with an empty
    `ctx_b`, so lm-eval's own preprocessing (run again, a no-op on clean text) yields the context as given.
    """
    with bz2.open(path, "rt", encoding="utf-8") if path.suffix == ".bz2" else path.open(encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if len(lines) % 6:
        raise ValueError(f"{path}: {len(lines)} lines, not a multiple of 6 (context, gold, 4 endings per item).")
    rows = []
    for i in range(0, len(lines), 6):
        activity_label, ctx = lines[i].split(": ", 1)
        rows.append(
            {
                "ind": i // 6,
                "activity_label": activity_label,
                "ctx_a": ctx,
                "ctx_b": "",
                "ctx": ctx,
                "endings": lines[i + 2 : i + 6],
                "split": "val",
                "label": lines[i + 1].strip(),
            }
        )
    return rows


def convert_agieval_aqua(path: Path) -> list[dict]:
    """AGIEval `aqua-rat.jsonl` -> `hails/agieval-aqua-rat` `{query, choices, gold}`.

    The query is AGIEval's zero-shot prompt (`convert_zero_shot` of its `dataset_loader.py`), which that Hub
    dataset was built with; the choices are the options as written (`"(A)21"`), gold a one-element index list.
    """
    rows = []
    for item in _read_jsonl(path):
        options = item["options"]
        last_letter = "ABCDEFG"[(len(options) if len(options) != 1 else 5) - 1]
        query = (
            (item["passage"] or "")
            + f"Q: {item['question']} Answer Choices: {' '.join(options)}\n"
            + f"A: Among A through {last_letter}, the answer is"
        )
        rows.append({"query": query, "choices": options, "gold": [_letters(len(options)).index(item["label"])]})
    return rows


def convert_commonsense_qa(path: Path) -> list[dict]:
    """Already in the `tau/commonsense_qa` schema: read as is."""
    return _read_jsonl(path)


_ACC_NORM = ("acc_norm",)
_ARC_DEVIATION = (
    "llm-foundry forced every item to 4 choices: 3-choice items carry a duplicated distractor and 5-choice items "
    "were cut to 4; answer labels are A-D for all items"
)

BENCHMARKS: tuple[LocalBenchmark, ...] = (
    LocalBenchmark(
        "winogrande",
        "winogrande/default.yaml",
        "winogrande/llmfoundry_winogrande.jsonl",
        "validation",
        convert_winogrande,
        {"path": "allenai/winogrande", "name": "winogrande_xl"},
        deviations=(
            "sentence/option1/option2 rebuilt from llm-foundry's {context_options, continuation}: the options are "
            "cut at their common prefix, so a rebuilt option may start mid-word, but the strings lm-eval scores "
            "(sentence[:idx] + option, then sentence[idx+1:].strip()) are unchanged",
        ),
    ),
    LocalBenchmark(
        "copa",
        "super_glue/copa/default.yaml",
        "copa/llmfoundry_copa.jsonl",
        "validation",
        convert_copa,
        {"path": "aps/super_glue", "name": "copa"},
        deviations=(
            "premise and question rebuilt from llm-foundry's query ('<premise>, because|therefore'): premise = text "
            "before the comma + '.'; lm-eval drops the premise's last character, so the prompt equals lm-eval's "
            "when every original premise ends in one punctuation mark",
            "choices come with their first letter lower-cased; lm-eval lower-cases it too",
        ),
        added_metrics=_ACC_NORM,
    ),
    LocalBenchmark(
        "boolq",
        "super_glue/boolq/default.yaml",
        "boolq/llmfoundry_boolq.jsonl",
        "validation",
        convert_boolq,
        {"path": "aps/super_glue", "name": "boolq"},
        deviations=(
            "passages lack the Wikipedia title: lm-eval's passage reads '<title> -- <passage>', here '<passage>'",
        ),
        prompts_identical=False,
        added_metrics=_ACC_NORM,
    ),
    LocalBenchmark(
        "wsc273",
        "wsc273/default.yaml",
        "wsc273/WSCollection.xml",
        "test",
        convert_wsc273,
        {"path": "lighteval/winograd_wsc", "name": "wsc273"},
        deviations=(
            "built from the original Winograd Schema Collection XML with the same field rules as the Hub builder "
            "(first 273 schemas), not read from the Hub parquet; llm-foundry's WSC273 copy agrees on every text, "
            "continuation and label but shortens 130 of the 273 option pairs ('the suitcase' for 'the brown "
            "suitcase'), so it is not used",
        ),
    ),
    LocalBenchmark(
        "wsc",
        "super_glue/wsc/default.yaml",
        "wsc_superglue/val.jsonl",
        "validation",
        convert_superglue_wsc,
        {"path": "aps/super_glue", "name": "wsc.fixed"},
        deviations=(
            "original SuperGLUE WSC validation file (jiant) with the Hub's 'wsc.fixed' span repair applied here",
        ),
        added_metrics=_ACC_NORM,
    ),
    LocalBenchmark(
        "truthfulqa_mc1",
        "truthfulqa/truthfulqa_mc1.yaml",
        "truthfulqa/mc_task.json",
        "validation",
        convert_truthfulqa,
        {"path": "truthfulqa/truthful_qa", "name": "multiple_choice"},
        deviations=("read from TruthfulQA's mc_task.json at the commit the Hub builder pinned (817 questions)",),
        added_metrics=_ACC_NORM,
    ),
    LocalBenchmark(
        "truthfulqa_mc2",
        "truthfulqa/truthfulqa_mc2.yaml",
        "truthfulqa/mc_task.json",
        "validation",
        convert_truthfulqa,
        {"path": "truthfulqa/truthful_qa", "name": "multiple_choice"},
        deviations=("read from TruthfulQA's mc_task.json at the commit the Hub builder pinned (817 questions)",),
    ),
    LocalBenchmark(
        "arc_easy",
        "arc/arc_easy.yaml",
        "arc/llmfoundry_arc_easy.jsonl",
        "test",
        convert_arc,
        {"path": "allenai/ai2_arc", "name": "ARC-Easy"},
        deviations=(_ARC_DEVIATION,),
        prompts_identical=False,
    ),
    LocalBenchmark(
        "arc_challenge",
        "arc/arc_challenge.yaml",
        "arc/llmfoundry_arc_challenge.jsonl",
        "test",
        convert_arc,
        {"path": "allenai/ai2_arc", "name": "ARC-Challenge"},
        deviations=(_ARC_DEVIATION,),
        prompts_identical=False,
    ),
    LocalBenchmark(
        "openbookqa",
        "openbookqa/openbookqa.yaml",
        "openbookqa/llmfoundry_openbook_qa.jsonl",
        "test",
        convert_openbookqa,
        {"path": "allenai/openbookqa", "name": "main"},
        deviations=("rebuilt from llm-foundry's {query = question_stem, choices, gold}; item ids are row numbers",),
    ),
    LocalBenchmark(
        "hellaswag",
        "hellaswag/hellaswag.yaml",
        "hellaswag/hellaswag_val_full.txt.bz2",
        "validation",
        convert_hellaswag,
        {"path": "Rowan/hellaswag", "name": None},
        deviations=(
            "llama.cpp's preprocessed text: the context is 'activity_label: ctx' with ctx_b not split out, so "
            "lm-eval's ctx_b.capitalize() is not applied (ctx_b stays lower-case); bracket tags were removed by "
            "llama.cpp's preprocessing, close to but not exactly lm-eval's",
        ),
        prompts_identical=False,
    ),
    LocalBenchmark(
        "agieval_aqua_rat",
        "agieval/aqua-rat.yaml",
        "aqua/agieval-v1-aqua-rat.jsonl",
        "test",
        convert_agieval_aqua,
        {"path": "hails/agieval-aqua-rat", "name": None},
        deviations=("query rebuilt with AGIEval's zero-shot prompt from its aqua-rat.jsonl, as the Hub copy was",),
    ),
    LocalBenchmark(
        "commonsense_qa",
        "commonsense_qa/default.yaml",
        "commonsense_qa/validation.jsonl",
        "validation",
        convert_commonsense_qa,
        {"path": "tau/commonsense_qa", "name": None},
        added_metrics=_ACC_NORM,
    ),
)


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _builtin_metric_list(benchmark: LocalBenchmark) -> list[dict]:
    config = yaml.load((LM_EVAL_TASKS / benchmark.builtin_yaml).read_text(), Loader=_IgnoreTagsLoader)
    if "metric_list" not in config and "include" in config:  # e.g. arc_challenge includes arc_easy
        config = yaml.load(
            (LM_EVAL_TASKS / benchmark.builtin_yaml).parent.joinpath(config["include"]).read_text(),
            Loader=_IgnoreTagsLoader,
        )
    return config["metric_list"]


class _IgnoreTagsLoader(yaml.SafeLoader):
    """Reads a built-in task YAML as data, leaving its `!function` references as plain strings."""


_IgnoreTagsLoader.add_constructor("!function", lambda loader, node: loader.construct_scalar(node))


def write_local_task(benchmark: LocalBenchmark, data_dir: Path, work_dir: Path) -> dict:
    """Convert one benchmark's local file and write a task YAML that points lm-eval's built-in config at it.

    Args:
        benchmark (`LocalBenchmark`): what to convert and which built-in config to reuse.
        data_dir (`Path`): the folder laid out as the project's evaluation data (`SOURCES.md`).
        work_dir (`Path`): where the converted JSONL (`data/`) and the task YAML (`tasks/`) go.

    Returns:
        `dict`: provenance for the results JSON (source file and its sha256, rows, split, Hub dataset,
        deviations, and the YAML written).

    Raises:
        InputFileError: if the benchmark's local file is not under `data_dir`.
    """
    source = data_dir / benchmark.source
    if not source.is_file():
        raise InputFileError(
            f"{benchmark.task}: no {benchmark.source} under {data_dir}. Point --data-dir at a folder laid out as "
            "the project's evaluation data (see its SOURCES.md), e.g. ../shared/data."
        )
    rows = benchmark.convert(source)
    data_file = work_dir / "data" / f"{benchmark.task}.jsonl"
    data_file.parent.mkdir(parents=True, exist_ok=True)
    data_file.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")

    task_config = {
        "include": str(LM_EVAL_TASKS / benchmark.builtin_yaml),
        "task": benchmark.task,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {benchmark.split: str(data_file.resolve())}},
        # Only the evaluated split exists locally; the built-in configs also name train/validation splits.
        "training_split": None,
        "validation_split": benchmark.split if benchmark.split == "validation" else None,
        "test_split": benchmark.split if benchmark.split == "test" else None,
        "fewshot_split": None,
        "num_fewshot": 0,
    }
    if benchmark.added_metrics:
        metrics = _builtin_metric_list(benchmark)
        task_config["metric_list"] = metrics + [
            {"metric": name, "aggregation": "mean", "higher_is_better": True} for name in benchmark.added_metrics
        ]
    task_file = work_dir / "tasks" / f"{benchmark.task}.yaml"
    task_file.parent.mkdir(parents=True, exist_ok=True)
    task_file.write_text(yaml.safe_dump(task_config, sort_keys=False))
    return {
        "lm_eval_task": benchmark.task,
        "builtin_config": benchmark.builtin_yaml,
        "source": benchmark.source,
        "source_sha256": sha256_of(source),
        "rows": len(rows),
        "split": benchmark.split,
        "hub_dataset": {**benchmark.hub_dataset, "split": benchmark.split},
        "deviations": list(benchmark.deviations),
        "prompts_identical": benchmark.prompts_identical,
        "added_metrics": list(benchmark.added_metrics),
        "task_yaml": str(task_file),
    }
