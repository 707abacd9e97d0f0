"""WikiText-2 perplexity by sliding windows, the recipe of Transformers' perplexity guide.

    python examples/eval/perplexity.py MODEL_DIR \
        --text-file ../shared/data/wikitext2/wikitext-2-raw-v1.test.hf-joined.txt --out ppl.json
    python examples/eval/perplexity.py MODEL_DIR --from-hub --out ppl.json   # needs a network

The text is the raw WikiText-2 test split joined as the guide joins it: `"\\n\\n".join(rows["text"])`, read from a
local file or from the Hub (`load_dataset("wikitext", "wikitext-2-raw-v1", split="test")`). It is tokenized once
with the model folder's tokenizer (special tokens as that tokenizer adds them) and scored in windows of
`max_length` tokens (the model's context by default) that advance by `stride` tokens; in each window only the
tokens not scored by the previous one count, the rest being context (labels -100).

Three numbers come out, as JSON: token perplexity (depends on the tokenizer, so the tokenizer is named),
bits per byte (total nll / ln 2 / UTF-8 bytes of the text) and word perplexity (exp of total nll over the
whitespace-separated words), the last two comparable across tokenizers.

Token accounting differs from the guide in one respect: the guide counts `valid labels - batch_size` tokens in
every window, which is right for the first window (its first label is dropped by the shift) but one short in
every later one. Here the count is the labels that survive the shift, so the summed nll is exact.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mtlm_recipes.errors import report_user_errors
from mtlm_recipes.eval.model_folder import check_model_folder
from mtlm_recipes.eval.perplexity import DEFAULT_STRIDE, load_wikitext, perplexity_report


@report_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="a model folder (loaded with trust_remote_code=True)")
    parser.add_argument("--text-file", type=Path, help="the joined raw WikiText-2 test text")
    parser.add_argument("--from-hub", action="store_true", help="read wikitext-2-raw-v1 test from the Hub")
    parser.add_argument("--tokenizer", help="tokenizer folder, if the model folder has none")
    parser.add_argument("--tokenizer-name", help="name of the tokenizer in the report, e.g. Mistral-7B-v0.1")
    parser.add_argument("--max-length", type=int, help="window length; defaults to the model's context")
    parser.add_argument("--stride", type=int, default=DEFAULT_STRIDE)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON report")
    args = parser.parse_args()

    check_model_folder(args.model_dir, args.tokenizer)
    text = load_wikitext(args.text_file, args.from_hub)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.model_dir, trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(
        args.model_dir, trust_remote_code=True, dtype=getattr(torch, args.dtype)
    ).to(args.device)
    report = perplexity_report(model.eval(), tokenizer, text, args.max_length, args.stride, args.tokenizer_name)
    report = {
        "model": str(args.model_dir),
        "text": str(args.text_file) if args.text_file else "hub:wikitext/wikitext-2-raw-v1/test",
        "dtype": args.dtype,
        "device": args.device,
        **report,
    }
    unscored = report["tokens"] - 1 - report["scored_tokens"]
    if unscored:
        print(
            f"note: stride == window ({report['stride']}), so the first token of each window ({unscored} tokens) is "
            "not scored; bits per byte and word perplexity leave out their nll. Pass a smaller --stride.",
            file=sys.stderr,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("token_perplexity", "bits_per_byte", "word_perplexity")}))


if __name__ == "__main__":
    main()
