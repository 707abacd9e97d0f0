"""A saved MTLM folder loads with trust_remote_code in a process where mtlm_hf cannot be imported."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from mtlm_hf import MTLMConfig

PROMPT = [[1, 15, 27, 33, 8, 60], [1, 44, 9, 71, 5, 12]]

LOAD_AND_REPORT = """
import json, torch, transformers
from transformers import AutoModel, AutoModelForCausalLM, pipeline

try:
    import mtlm_hf
    raise SystemExit("mtlm_hf must not be importable here")
except ModuleNotFoundError:
    pass

folder = {folder!r}
ids = torch.tensor({prompt})
model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
assert model.config.model_type == "mtlm"
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
with torch.no_grad():
    logits = model(ids).logits
generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12,
                           do_sample=False)
base = AutoModel.from_pretrained(folder, trust_remote_code=True)

generator = pipeline("text-generation", model=folder, trust_remote_code=True)
text = generator("hello", max_new_tokens=5, do_sample=False)[0]["generated_text"]
print(json.dumps({{
    "logits": logits.tolist(),
    "generated": generated.tolist(),
    "base_class": type(base).__name__,
    "pipeline_text": text,
}}))
"""


def _tiny_word_tokenizer(folder):
    """A real fast tokenizer (word-level over a small vocabulary), saved next to the model."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, 99)}, "hello": 50}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    tokenizer.save_pretrained(folder)


@pytest.mark.parametrize("preset", ["m1-tiny", "m2-tiny"])
def test_trust_remote_code_load_in_clean_process_gives_same_logits_and_generation(preset, tmp_path, run_without_mtlm):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(MTLMConfig.from_preset(preset)).eval()
    folder = tmp_path / "checkpoint"
    model.save_pretrained(folder)
    _tiny_word_tokenizer(folder)

    ids = torch.tensor(PROMPT)
    with torch.no_grad():
        logits = model(ids).logits
    generated = model.generate(
        ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, min_new_tokens=12, do_sample=False
    )

    remote = run_without_mtlm(LOAD_AND_REPORT.format(folder=str(folder), prompt=PROMPT))
    assert torch.equal(torch.tensor(remote["logits"]), logits)
    assert remote["generated"] == generated.tolist()
    assert remote["base_class"] == "MTLMModel"
    assert remote["pipeline_text"].startswith("hello")
