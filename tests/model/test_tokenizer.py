"""The Mistral-7B-v0.1 tokenizer built offline: sentencepiece's ids, and a save/reload that needs no mtlm."""

import importlib.resources
import sys
from pathlib import Path

import pytest
import sentencepiece

from mtlm_hf import mistral_tokenizer

# Opening paragraph of "A Tale of Two Cities" (Charles Dickens, 1859; public domain).
DICKENS = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it was "
    "the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything before us, "
    "we had nothing before us, we were all going direct to Heaven, we were all going direct the other way--in "
    "short, the period was so far like the present period, that some of its noisiest authorities insisted on its "
    "being received, for good or for evil, in the superlative degree of comparison only.\n\n"
    "There were a king with a large jaw and a queen with a plain face, on the throne of England; there were a "
    "king with a large jaw and a queen with a fair face, on the throne of France. In both countries it was clearer "
    "than crystal to the lords of the State preserves of loaves and fishes, that things in general were settled "
    "for ever. It was the year of Our Lord one thousand seven hundred and seventy-five."
)
TEXTS = [
    "The future of AI is",
    DICKENS,
    "  two leading spaces and two trailing  ",
    " ",
    "",
    "a  b   c    d",
    "line one\nline two\n\n\tindented\r\nwindows line",
    "Pi is 3.14159, not 22/7; 1,000,000 != 10^6 in 2024?",
    "héllo wörld: naïve café, 日本語のテキスト, русский текст, 🤖🚀, zero\u200bwidth, nbsp\u00a0here",
    "def f(x):\n    return x  **  2  # code keeps its spaces\n",
]
WIKITEXT = Path(__file__).resolve().parents[3] / "shared/data/wikitext2/wikitext-2-raw-v1.test.hf-joined.txt"


@pytest.fixture(scope="module")
def tokenizer():
    return mistral_tokenizer()


@pytest.fixture(scope="module")
def spm():
    model = importlib.resources.files("mistral_common").joinpath("data", "tokenizer.model.v1").read_bytes()
    return sentencepiece.SentencePieceProcessor(model_proto=model)


def test_vocabulary_and_special_tokens_match_mistral(tokenizer):
    assert len(tokenizer) == 32000
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.pad_token is None
    assert tokenizer("The future of AI is")["input_ids"] == [1, 415, 3437, 302, 16107, 349]


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_ids_equal_sentencepiece_with_bos(tokenizer, spm, text):
    assert tokenizer(text)["input_ids"] == [spm.bos_id()] + spm.encode(text)


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_decode_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer(text)["input_ids"], skip_special_tokens=True) == text


def test_text_after_special_tokens_gets_the_dummy_prefix(tokenizer, spm):
    """Each stretch between special tokens is encoded as sentencepiece encodes it alone (legacy behaviour)."""
    assert tokenizer("Hello</s>world")["input_ids"] == [1] + spm.encode("Hello") + [2] + spm.encode("world")
    assert tokenizer("<s>Hi  there</s> x")["input_ids"] == [1, 1] + spm.encode("Hi  there") + [2] + spm.encode(" x")


def test_pad_as_eos_pads_on_the_left(tokenizer):
    """The original trainers set pad = eos; left padding keeps each prompt's last token at the end."""
    tokenizer = mistral_tokenizer()  # a private copy: setting the pad token mutates it
    tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(["The future of AI is", "Hi"], padding=True)
    assert batch["input_ids"][1] == [2, 2, 2, 2, 1, 15359]
    assert batch["attention_mask"][1] == [0, 0, 0, 0, 1, 1]


def test_save_and_reload_offline_without_mtlm(tokenizer, tmp_path, run_without_mtlm):
    folder = tmp_path / "tokenizer"
    tokenizer.save_pretrained(folder)
    reloaded = run_without_mtlm(
        f"""
        import json
        from transformers import AutoTokenizer
        tokenizer = AutoTokenizer.from_pretrained({str(folder)!r})
        print(json.dumps([tokenizer(text)["input_ids"] for text in {TEXTS!r}]))
        """
    )
    assert reloaded == [tokenizer(text)["input_ids"] for text in TEXTS]


def test_missing_mistral_common_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "mistral_common", None)  # what `import` sees when a package is absent
    with pytest.raises(ImportError, match="pip install mistral-common"):
        mistral_tokenizer()


@pytest.mark.slow
@pytest.mark.skipif(not WIKITEXT.is_file(), reason="the shared WikiText-2 test file is not beside the project")
def test_ids_equal_sentencepiece_on_wikitext2_test(tokenizer, spm):
    lines = WIKITEXT.read_text(encoding="utf-8").split("\n")
    assert tokenizer(lines, add_special_tokens=False)["input_ids"] == spm.encode(lines)
