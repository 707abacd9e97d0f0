"""Evaluation as the MTLM cards did it, offline (`examples/eval/` are the command lines): WikiText-2 perplexity,
and the cards' zero-shot benchmarks through lm-evaluation-harness on local copies of the data."""
