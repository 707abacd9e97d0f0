"""The shared zoo of tiny random decoders (and the growth specs the growth tests apply to them).

`build(name)` gives a 3-layer model of one architecture with random weights, built offline from a
config, in eval mode with eager attention. Each architecture has a few per-layer settings switched
on, so that growth has something to remap. Import it as `from zoo import build` (tests/ is on
`sys.path` through the rootdir conftest).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

import mtlm_hf
from growth_ops import GrowthSpec, discover_anatomy, grow
from growth_ops.probe import off_init

VOCAB = 99
IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
LLAMA_LIKE = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, **IDS
)
SLIDING = ["full_attention", "sliding_attention", "sliding_attention"]
QWEN3_MOE = dict(
    LLAMA_LIKE, num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16
)


@dataclass(frozen=True)
class TinyDecoder:
    """A tiny decoder: a transformers `model_type` and its settings, or an MTLM preset and overrides."""

    model_type: str
    settings: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None

    def config(self, **overrides: Any) -> PreTrainedConfig:
        settings = {**self.settings, **overrides}
        if self.preset is not None:
            return mtlm_hf.MTLMConfig.from_preset(self.preset, **{"num_hidden_layers": 3, **IDS, **settings})
        return AutoConfig.for_model(self.model_type, **settings)


ZOO = {
    "llama": TinyDecoder("llama", dict(LLAMA_LIKE, num_key_value_heads=2)),
    "mistral": TinyDecoder("mistral", dict(LLAMA_LIKE, num_key_value_heads=2)),
    "mixtral": TinyDecoder(
        "mixtral", dict(LLAMA_LIKE, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)
    ),
    "qwen2": TinyDecoder(
        "qwen2",
        dict(LLAMA_LIKE, num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=1),
    ),
    "qwen3": TinyDecoder(
        "qwen3",
        dict(
            LLAMA_LIKE,
            num_key_value_heads=2,
            head_dim=8,
            layer_types=SLIDING,
            use_sliding_window=True,
            sliding_window=4,
        ),
    ),
    "qwen3_moe": TinyDecoder("qwen3_moe", dict(QWEN3_MOE, mlp_only_layers=[1])),
    # An index list and a sparse step at once: layer 0 is dense by the step, layer 2 by the list.
    "qwen3_moe-sparse-step": TinyDecoder("qwen3_moe", dict(QWEN3_MOE, decoder_sparse_step=2, mlp_only_layers=[2])),
    "gemma": TinyDecoder("gemma", dict(LLAMA_LIKE, num_key_value_heads=2, head_dim=8)),
    "gemma2": TinyDecoder("gemma2", dict(LLAMA_LIKE, num_key_value_heads=2, head_dim=8, sliding_window=4)),
    "gemma3_text": TinyDecoder(
        "gemma3_text", dict(LLAMA_LIKE, num_key_value_heads=2, head_dim=8, sliding_window=4, layer_types=SLIDING[::-1])
    ),
    "phi3": TinyDecoder("phi3", dict(LLAMA_LIKE, num_key_value_heads=2)),
    "smollm3": TinyDecoder("smollm3", dict(LLAMA_LIKE, num_key_value_heads=2, no_rope_layers=[1, 0, 1])),
    "gpt2": TinyDecoder("gpt2", dict(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_inner=64, **IDS)),
    "gpt_neox": TinyDecoder("gpt_neox", dict(LLAMA_LIKE)),
    "opt": TinyDecoder("opt", dict(LLAMA_LIKE, ffn_dim=64, word_embed_proj_dim=32)),
    "falcon": TinyDecoder(
        "falcon", dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, **IDS)
    ),
    "bloom": TinyDecoder("bloom", dict(vocab_size=VOCAB, hidden_size=32, n_layer=3, n_head=4, **IDS)),
    "mtlm-m1": TinyDecoder("mtlm", preset="m1-tiny"),
    "mtlm-m2": TinyDecoder("mtlm", preset="m2-tiny"),
    "mtlm-sliding": TinyDecoder("mtlm", dict(layer_types=SLIDING, sliding_window=4), preset="m1-tiny"),
}

# Blocks whose residual writers the name table does not know, or that cannot be an identity: growth_ops must find
# their writers by probing (gpt_oss's expert biases, codegen's fc_out, ctrl's ffn.2, ...) or refuse with the reason.
GENERIC = dict(LLAMA_LIKE, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
GPT_LIKE = dict(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64, **IDS)
PROBED = {
    "gpt_oss": TinyDecoder("gpt_oss", dict(GENERIC, num_local_experts=4, num_experts_per_tok=2)),
    "doge": TinyDecoder("doge", GENERIC),
    "codegen": TinyDecoder("codegen", dict(GPT_LIKE, rotary_dim=4)),
    "gptj": TinyDecoder("gptj", dict(GPT_LIKE, rotary_dim=4)),
    "xglm": TinyDecoder("xglm", dict(GENERIC, d_model=32, ffn_dim=64, num_layers=3, attention_heads=4)),
    "biogpt": TinyDecoder("biogpt", GENERIC),
    "ctrl": TinyDecoder("ctrl", dict(GPT_LIKE, dff=64)),
    "jetmoe": TinyDecoder("jetmoe", GENERIC),
    "diffllama": TinyDecoder("diffllama", GENERIC),
    "openai-gpt": TinyDecoder("openai-gpt", GPT_LIKE),
    "minimax": TinyDecoder("minimax", dict(GENERIC, num_local_experts=4, num_experts_per_tok=2)),
}
"""Identity growth checked by probing the block (tests/growth/test_identity_probe.py)."""

IN_MEMORY_ARCHITECTURES = [name for name in ZOO if name != "qwen3_moe-sparse-step"]
"""Grown in memory (tests/growth/test_growth_models.py)."""

# Each with something growth must get right on disk: per-layer lists (layer_types, no_rope_layers), index
# lists and a sparse step (qwen3_moe), tensors whose names on disk differ from the model's (mixtral's and
# qwen3_moe's per-expert weights, gpt_neox's embed_out), tied embeddings (gemma3_text, gpt2, MTLM M1),
# another layer path (gpt2's transformer.h) and custom code (MTLM).
ON_DISK_ARCHITECTURES = [
    "llama",
    "qwen2",
    "gemma3_text",
    "qwen3_moe-sparse-step",
    "mixtral",
    "smollm3",
    "gpt2",
    "gpt_neox",
    "mtlm-m1",
    "mtlm-m2",
]
"""Grown on disk and compared with growth in memory (tests/growth/test_grow_checkpoint.py)."""

SPECS = {
    "stack": GrowthSpec(depth=2),
    "interleave": GrowthSpec(num_layers=5, depth_method="interleave"),  # non-integer growth: 3 -> 5
    "identity": GrowthSpec(depth=2, depth_method="identity"),
    "dus": GrowthSpec(depth=2, depth_method="dus", overlap=1),  # SOLAR: two copies, each without `overlap` layers
    "explicit": GrowthSpec(layer_map=(0, 1, 2, 1, 2)),
}
"""One growth spec per depth method, for the 3-layer models of the zoo."""
WIDTH_SPECS = {
    "width": GrowthSpec(width=2),  # hidden, heads and intermediate x2, head_dim kept
    "width-stack": GrowthSpec(width=2, depth=2),
}
"""Width growth alone and with depth, for the zoo-wide width test."""
FUNCTION_PRESERVING = ("identity", "identity-end", "width")
"""The specs that promise the same function (logits to 1e-5 in fp32) after growth."""


def spec_for(method: str, num_layers: int) -> GrowthSpec:
    """`SPECS[method]` or `WIDTH_SPECS[method]`; `"identity-end"` is identity growth with every copy after the last
    layer (`positions=[L-1] * L`): the originals keep their positions, for models whose layers compute by position
    (diffllama's `lambda_init`), which the default placement (a copy after each layer) is refused for."""
    if method == "identity-end":
        return GrowthSpec(depth_method="identity", positions=(num_layers - 1,) * num_layers)
    return {**SPECS, **WIDTH_SPECS}[method]


def build(name: str, dtype: torch.dtype = torch.float32, seed: int = 0, **overrides: Any) -> PreTrainedModel:
    """A tiny random model of zoo entry `name`, in eval mode with eager attention."""
    torch.manual_seed(seed)
    config = {**ZOO, **PROBED}[name].config(**overrides)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype).eval()


def input_ids(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def read_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint folder, by name."""
    tensors = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def assert_same_tensors(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    """Same names, dtypes, shapes and values, bit for bit."""
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert actual[name].shape == tensor.shape, name
        assert torch.equal(actual[name], tensor), name


# One small config for every family: the names of the common settings under each family's spelling.
SMALL = dict(
    GENERIC,
    n_embd=32,
    n_layer=3,
    n_head=4,
    n_positions=64,
    d_model=32,
    num_layers=3,
    rotary_dim=4,
    num_local_experts=4,
    num_experts=4,
    num_experts_per_tok=2,
    moe_intermediate_size=16,
)
MAX_PARAMETERS = 20_000_000
"""The most parameters (and buffers) a small model may hold. A generic config can leave a family at its
full-size defaults (blt's reach 4.6 billion): counted on the meta device and refused, never allocated."""

# Per-family small values where `SMALL` does not build a family or leaves it big: the values of the family's own
# upstream tests (`*ModelTester` in transformers' tests/models/<family>/test_modeling_<family>.py), with three
# layers where the tester has fewer, so that growth has a middle layer (and DUS an overlap), and without
# `is_decoder`, which the testers of some decoders pass. Each entry: (settings, source).
# transformers' `CausalLMModelTester` defaults (tests/causal_lm_tester.py), which most family testers start from.
TESTER = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=37,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    hidden_act="silu",
    **IDS,
)
_MLA = dict(kv_lora_rank=16, q_lora_rank=32, qk_rope_head_dim=16, v_head_dim=32, qk_nope_head_dim=32)
_MLA_MOE = dict(
    TESTER, num_key_value_heads=4, moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2, **_MLA
)
# index_topk above the tests' 10 tokens: a top-k over tied scores picks differently with and without the cache
# (seen on a freshly built 6-layer glm_moe_dsa, no growth involved).
_INDEXER = dict(index_n_heads=2, index_head_dim=16, index_topk=16)
_MLA_SOURCE = "the MLA and MoE sizes of tests/models/deepseek_v3/test_modeling_deepseek_v3.py: DeepseekV3ModelTester"
_HYBRID = ["linear_attention", "full_attention", "linear_attention"]
_HYBRID_SOURCE = "zoo.SMALL with one full-attention layer: three linear-attention layers alone do not run"
# Multimodal families: their decoder from the generic values, with a tiny tower in front (growth grows the decoder).
_VISION = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, image_size=20, patch_size=5
)
_QWEN_VISION = dict(
    depth=2,
    hidden_size=32,
    intermediate_size=64,
    num_heads=4,
    out_hidden_size=32,
    patch_size=2,
    spatial_merge_size=1,
    temporal_patch_size=1,
)
_TOWER_SOURCE = "zoo.SMALL (or GENERIC) as text_config, with a tower of two layers at width 32"
_BAMBA_MIXER = dict(
    mamba_n_groups=1, mamba_n_heads=16, mamba_d_state=16, mamba_d_conv=4, mamba_expand=2, mamba_chunk_size=16
)
_INKLING_SOURCE = "zoo.SMALL with the head's unpadded vocabulary at vocab_size (its default, 200058, is generated)"
_GEMMA4 = dict(
    text_config=dict(
        GENERIC,
        num_hidden_layers=4,
        layer_types=["sliding_attention", "full_attention"] * 2,
        global_head_dim=16,
        vocab_size_per_layer_input=VOCAB,
        hidden_size_per_layer_input=16,
    ),
    vision_config=dict(_VISION, num_key_value_heads=1),
    audio_config=None,
    image_token_id=4,
    boi_token_id=5,
    eoi_token_id=6,
    video_token_id=7,
    audio_token_id=8,
)
_GEMMA4_SOURCE = "tests/models/gemma4/test_modeling_gemma4.py: Gemma4Vision2TextModelTester (text as zoo gemma4_text)"
_BLT_STACK = dict(
    num_hidden_layers=3,
    num_attention_heads=2,
    num_key_value_heads=2,
    intermediate_size=32,
    max_position_embeddings=32,
    rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
    hidden_act="silu",
    rms_norm_eps=1e-5,
    dropout=0.0,
)
FAMILY_SMALL: dict[str, tuple[dict[str, Any], str]] = {
    "emu3": (
        dict(
            text_config=SMALL,
            vq_config=dict(
                embed_dim=8,
                num_embeddings=16,
                latent_channels=4,
                base_channels=8,
                channel_multiplier=[1, 1],
                num_res_blocks=1,
                attn_resolutions=[],
            ),
        ),
        "zoo.SMALL as text_config, with a VQ image tokenizer of one block per level",
    ),
    "gemma3": (
        dict(
            text_config=dict(GENERIC, sliding_window=4),
            vision_config=_VISION,
            mm_tokens_per_image=2,
            image_token_index=4,
            boi_token_index=5,
            eoi_token_index=6,
        ),
        _TOWER_SOURCE + "; the token ids of Gemma4Vision2TextModelTester",
    ),
    "gemma4": (_GEMMA4, _GEMMA4_SOURCE),
    "gemma4_unified": (_GEMMA4, _GEMMA4_SOURCE + "; no audio tower"),
    "git": (
        dict(
            SMALL,
            vision_config=dict(
                hidden_size=32,
                intermediate_size=37,
                num_hidden_layers=2,
                num_attention_heads=4,
                image_size=16,
                patch_size=4,
            ),
        ),
        "zoo.SMALL with a vision tower of two layers at width 32",
    ),
    "mllama": (
        dict(
            text_config=dict(SMALL, cross_attention_layers=[1]),
            vision_config=dict(
                hidden_size=32,
                num_hidden_layers=2,
                num_global_layers=1,
                attention_heads=4,
                intermediate_size=64,
                image_size=16,
                patch_size=4,
                vision_output_dim=32,
                intermediate_layers_indices=[0],
                max_num_tiles=4,
            ),
        ),
        _TOWER_SOURCE + "; layer 1 is a cross-attention layer",
    ),
    "qwen3_5": (dict(text_config=dict(SMALL, layer_types=_HYBRID), vision_config=_QWEN_VISION), _TOWER_SOURCE),
    "qwen3_5_moe": (dict(text_config=dict(SMALL, layer_types=_HYBRID), vision_config=_QWEN_VISION), _TOWER_SOURCE),
    "axk1": (dict(_MLA_MOE, n_group=1, topk_group=1), _MLA_SOURCE),
    "axk2": (_MLA_MOE, _MLA_SOURCE),
    "dbrx": (
        dict(
            vocab_size=VOCAB,
            d_model=32,
            n_layers=3,
            n_heads=4,
            max_seq_len=64,
            attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0),
            ffn_config=dict(ffn_hidden_size=64, moe_num_experts=4, moe_top_k=2),
            **IDS,
        ),
        "zoo.SMALL's sizes under dbrx's names (its nested attn_config and ffn_config)",
    ),
    "deepseek_v32": (dict(_MLA_MOE, **_INDEXER), _MLA_SOURCE + ", with a small sparse-attention indexer"),
    "dots1": (
        dict(SMALL, n_routed_experts=4, n_shared_experts=1, first_k_dense_replace=1),
        "zoo.SMALL with dots1's MoE",
    ),
    "falcon": ({k: v for k, v in SMALL.items() if k != "head_dim"}, "zoo.SMALL without head_dim (derived in falcon)"),
    "gemma3n_text": (
        dict(
            SMALL,
            num_kv_shared_layers=0,
            layer_types=["sliding_attention", "full_attention", "full_attention"],
            vocab_size_per_layer_input=VOCAB,
            hidden_size_per_layer_input=8,
            laurel_rank=4,
            altup_num_inputs=2,
            activation_sparsity_pattern=[0.0, 0.0, 0.0],
            intermediate_size=[64, 64, 64],
        ),
        "zoo.SMALL with gemma3n's per-layer inputs, AltUp and LAuReL made small, without KV-shared layers",
    ),
    "glm4_moe_lite": (_MLA_MOE, _MLA_SOURCE),
    "glm_moe_dsa": (dict(_MLA_MOE, **_INDEXER), _MLA_SOURCE + ", with a small sparse-attention indexer"),
    "gpt_neo": (
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            num_layers=3,
            num_heads=4,
            attention_types=[[["global", "local"], 1], [["global"], 1]],
            max_position_embeddings=64,
            window_size=4,
            **IDS,
        ),
        "zoo.SMALL's sizes; gpt_neo's attention_types must cover its three layers",
    ),
    "lfm2_moe": (
        dict(SMALL, layer_types=["conv", "full_attention", "conv"], num_dense_layers=1),
        "zoo.SMALL with lfm2_moe's conv layers and one dense layer",
    ),
    "mamba2": (
        dict(
            vocab_size=VOCAB,
            hidden_size=32,
            num_hidden_layers=3,
            num_heads=8,
            head_dim=8,
            expand=2,
            n_groups=1,
            state_size=16,
            chunk_size=16,
            **IDS,
        ),
        "zoo.SMALL's sizes; mamba2 needs num_heads * head_dim == expand * hidden_size",
    ),
    "minicpm3": (dict(TESTER, num_key_value_heads=4, **_MLA), _MLA_SOURCE),
    "qwen3_5_moe_text": (dict(SMALL, layer_types=_HYBRID), _HYBRID_SOURCE),
    "qwen3_5_text": (dict(SMALL, layer_types=_HYBRID), _HYBRID_SOURCE),
    "sarvam_mla": (_MLA_MOE, _MLA_SOURCE),
    "youtu": (dict(TESTER, num_key_value_heads=4, **_MLA), _MLA_SOURCE),
    "zaya": (dict(SMALL, num_experts_per_tok=1), "zoo.SMALL with one expert per token (zaya supports no other)"),
    "bamba": (
        dict(
            TESTER,
            num_hidden_layers=4,
            intermediate_size=64,
            attn_layer_indices=[1, 3],
            attn_rotary_emb=8,
            **_BAMBA_MIXER,
        ),
        "tests/models/bamba/test_modeling_bamba.py: BambaModelTester",
    ),
    "deepseek_v2": (
        dict(
            TESTER,
            num_key_value_heads=4,
            moe_intermediate_size=12,
            n_shared_experts=1,
            n_routed_experts=8,
            num_experts_per_tok=2,
            first_k_dense_replace=1,
            **_MLA,
        ),
        "tests/models/deepseek_v2/test_modeling_deepseek_v2.py: DeepseekV2ModelTester",
    ),
    "deepseek_v3": (
        dict(
            TESTER,
            intermediate_size=32,
            num_key_value_heads=4,
            moe_intermediate_size=16,
            n_shared_experts=1,
            n_routed_experts=8,
            routed_scaling_factor=2.5,
            n_group=2,
            topk_group=1,
            num_experts_per_tok=8,
            first_k_dense_replace=1,
            **_MLA,
        ),
        "tests/models/deepseek_v3/test_modeling_deepseek_v3.py: DeepseekV3ModelTester",
    ),
    "granitemoehybrid": (
        dict(
            TESTER,
            num_hidden_layers=4,
            intermediate_size=112,  # the tester's 110, rounded: torch's grouped_mm on CPU needs 16-byte strides
            num_key_value_heads=4,
            num_local_experts=8,
            num_experts_per_tok=2,
            shared_intermediate_size=174,
            layer_types=["mamba", "attention", "mamba", "attention"],
            **_BAMBA_MIXER,
        ),
        "tests/models/granitemoehybrid/test_modeling_granitemoehybrid.py: GraniteMoeHybridModelTester",
    ),
    "inkling2_loop_text": (dict(SMALL, unpadded_vocab_size=VOCAB), _INKLING_SOURCE),
    "inkling2_text": (dict(SMALL, unpadded_vocab_size=VOCAB), _INKLING_SOURCE),
    "jamba": (
        dict(
            TESTER,
            intermediate_size=40,  # the tester's 37, rounded: torch's grouped_mm on CPU needs 16-byte strides
            # 4 layers and period 4 (the tester: 5 and 8), so that a stack keeps the period, as it does on Jamba's
            # own checkpoints (32 layers, period 8).
            num_hidden_layers=4,
            attn_layer_offset=1,
            attn_layer_period=4,
            num_experts=2,
            use_mamba_kernels=False,
        ),
        "tests/models/jamba/test_modeling_jamba.py: JambaModelTester",
    ),
    "kimi_linear": (
        dict(
            TESTER,
            num_key_value_heads=4,
            layer_types=_HYBRID,
            mlp_layer_types=["dense", "sparse", "sparse"],
            linear_conv_kernel_dim=2,
            linear_head_dim=16,
            linear_num_heads=4,
            q_lora_rank=None,
            kv_lora_rank=16,
            qk_nope_head_dim=32,
            qk_rope_head_dim=16,
            v_head_dim=32,
            moe_intermediate_size=16,
            n_routed_experts=8,
            n_shared_experts=1,
            num_experts_per_tok=2,
            n_group=1,
            topk_group=1,
        ),
        "tests/models/kimi_linear/test_modeling_kimi_linear.py: KimiLinearModelTester",
    ),
    "llama4": (
        dict(
            text_config=dict(
                TESTER,
                intermediate_size=32,
                num_attention_heads=2,
                head_dim=16,
                num_local_experts=4,
                num_experts_per_tok=1,
                interleave_moe_layer_step=1,
                moe_intermediate_size=16,
            ),
            vision_config=dict(
                hidden_size=32,
                intermediate_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=32,
                patch_size=8,
                vision_output_dim=32,
                projector_input_dim=32,
                projector_output_dim=32,
            ),
        ),
        "tests/models/llama4/test_modeling_llama4.py: Llama4TextModelTester (text); a small vision tower",
    ),
    "longcat_flash": (
        dict(
            vocab_size=VOCAB,
            hidden_size=144,
            ffn_hidden_size=288,
            expert_ffn_hidden_size=48,
            num_layers=3,
            num_attention_heads=8,
            num_key_value_heads=8,
            kv_lora_rank=16,
            q_lora_rank=48,
            qk_rope_head_dim=4,
            v_head_dim=8,
            qk_nope_head_dim=8,
            head_dim=4,
            n_routed_experts=4,
            zero_expert_num=2,
            moe_topk=2,
            routed_scaling_factor=1.0,
            max_position_embeddings=128,
            **IDS,
        ),
        "tests/models/longcat_flash/test_modeling_longcat_flash.py: LongcatFlashModelTester",
    ),
    "qwen3_next": (
        dict(
            TESTER,
            layer_types=_HYBRID,
            linear_conv_kernel_dim=2,
            linear_key_head_dim=16,
            linear_value_head_dim=16,
            linear_num_key_heads=4,
            linear_num_value_heads=8,
            num_experts=4,
            num_experts_per_tok=2,
            moe_intermediate_size=16,
        ),
        "tests/models/qwen3_next/test_modeling_qwen3_next.py: Qwen3NextModelTester",
    ),
    "zamba2": (
        dict(
            vocab_size=VOCAB,
            hidden_size=16,
            mamba_d_state=2,
            chunk_size=8,
            num_hidden_layers=3,
            num_attention_heads=2,
            n_mamba_heads=8,
            mamba_ngroups=8,
            intermediate_size=4,
            max_position_embeddings=512,
            use_mamba_kernels=False,
            layers_block_type=["mamba", "hybrid", "hybrid"],
            num_mem_blocks=1,
            use_mem_rope=True,
            **IDS,
        ),
        "tests/models/zamba2/test_modeling_zamba2.py: Zamba2ModelTester",
    ),
    "blt": (
        dict(
            vocab_size=VOCAB,
            max_position_embeddings=32,
            patch_in_forward=False,
            patch_size=4,
            patching_mode="entropy",
            patching_threshold=1.335442066192627,
            patching_batch_size=1,
            max_patch_length=None,
            cross_attn_k=2,
            encoder_hash_byte_group_size=[2, 3],
            encoder_hash_byte_group_vocab=64,
            encoder_hash_byte_group_nb_functions=1,
            patcher_config=dict(_BLT_STACK, hidden_size=16),
            encoder_config=dict(_BLT_STACK, hidden_size=16),
            decoder_config=dict(_BLT_STACK, vocab_size=VOCAB, hidden_size=16, hidden_size_global=32),
            global_config=dict(_BLT_STACK, hidden_size=32),
            tie_word_embeddings=False,
            # The tester sets these on the config after building it: generation sizes its cache by them.
            num_hidden_layers=3,
            num_attention_heads=2,
            hidden_size=16,
            **IDS,
        ),
        "tests/models/blt/test_modeling_blt.py: BltModelTester",
    ),
    "gemma4_text": (
        dict(
            GENERIC,
            num_hidden_layers=4,
            layer_types=["sliding_attention", "full_attention", "sliding_attention", "full_attention"],
            # Twice the sliding layers' head_dim (the tester keeps them equal): per-layer head_dim, as in Gemma 4.
            global_head_dim=16,
            vocab_size_per_layer_input=VOCAB,
            hidden_size_per_layer_input=16,
            enable_moe_block=True,
            num_experts=4,
            moe_intermediate_size=16,
            top_k_experts=2,
        ),
        "tests/models/gemma4/test_modeling_gemma4.py: Gemma4TextModelTester (without its KV-shared layers)",
    ),
    "got_ocr2": (
        dict(
            text_config=dict(
                model_type="qwen2",
                vocab_size=VOCAB,
                hidden_size=128,
                intermediate_size=37,
                num_hidden_layers=3,
                num_attention_heads=4,
                num_key_value_heads=2,
                hidden_act="silu",
                max_position_embeddings=512,
                tie_word_embeddings=True,
            ),
            vision_config=dict(
                num_hidden_layers=2,
                output_channels=64,
                hidden_act="quick_gelu",
                hidden_size=32,
                mlp_dim=128,
                num_attention_heads=4,
                patch_size=2,
                image_size=64,
            ),
            bos_token_id=0,
            eos_token_id=0,
            pad_token_id=0,
            image_token_index=1,
        ),
        "tests/models/got_ocr2/test_modeling_got_ocr2.py: GotOcr2VisionText2TextModelTester",
    ),
    "moss_transcribe_diarize": (
        dict(
            text_config=dict(
                model_type="qwen3",
                vocab_size=VOCAB,
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=3,
                num_attention_heads=2,
                num_key_value_heads=2,
                head_dim=8,
                max_position_embeddings=64,
            ),
            audio_config=dict(
                d_model=16, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=32, max_source_positions=64
            ),
            audio_merge_size=4,
            audio_token_id=0,
        ),
        "tests/models/moss_transcribe_diarize/test_modeling_moss_transcribe_diarize.py: "
        "MossTranscribeDiarizeModelTester",
    ),
}
FAST_MAPPED = ["llama", "gpt2", "gpt_oss", "codegen", "ctrl", "jetmoe"]
"""One architecture per family kind grown from the mapping by default; the rest is marked `zoo`."""


class NotDecoderOnly(ValueError):
    """A model type of the causal-LM mapping that is not a decoder-only model (excluded by rule)."""


class TooLarge(ValueError):
    """A config whose model would hold more than `MAX_PARAMETERS`: refused before anything is allocated."""


def causal_lm_types() -> list[str]:
    """Every `model_type` of the installed transformers' causal-LM mapping."""
    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def small_config(model_type: str) -> PreTrainedConfig:
    """The small config of `model_type`: its `FAMILY_SMALL` values, else the generic `SMALL`."""
    settings = FAMILY_SMALL[model_type][0] if model_type in FAMILY_SMALL else SMALL
    return AutoConfig.for_model(model_type, **settings)


def count_parameters(config: PreTrainedConfig) -> int:
    """Parameters and buffers of the model `config` builds, counted on the meta device (nothing allocated)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(t.numel() for t in (*model.parameters(), *model.buffers()))


def build_small(model_type: str, seed: int = 0) -> PreTrainedModel:
    """A small random model of `model_type` from `small_config`, with noise on every parameter (`off_init`): a
    trained model holds no norm weight of ones or bias of zeros, and a growth that is exact only at those values
    (zaya's residual scale) must not pass here.

    Raises:
        NotDecoderOnly: For an encoder-decoder or an encoder (not a decoder-only model), with the reason.
        TooLarge: Where the small config would still build more than `MAX_PARAMETERS`.
        Exception: Whatever transformers raises where the small config does not build the family.
    """
    config = small_config(model_type)
    if getattr(config, "is_encoder_decoder", False):
        raise NotDecoderOnly("an encoder-decoder (config.is_encoder_decoder=True), not a decoder-only model")
    if hasattr(config, "is_decoder"):
        # In transformers 5 only encoder families that can be switched to decoding keep `is_decoder`.
        raise NotDecoderOnly("an encoder run as a decoder (its config has `is_decoder`), not a decoder-only model")
    size = count_parameters(config)
    if size > MAX_PARAMETERS:
        raise TooLarge(
            f"its small config still builds {size:,} parameters and buffers (limit {MAX_PARAMETERS:,}): give it "
            "small values in zoo.FAMILY_SMALL"
        )
    torch.manual_seed(seed)
    return off_init(AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval())


@functools.cache
def unbuilt_reason(model_type: str) -> str | None:
    """Why `model_type` is not grown (not decoder-only, or does not build small and run), else `None`.

    Cached: each model type is built once per test session for this check, not once per case.
    """
    try:
        logits(build_small(model_type), input_ids())
    except NotDecoderOnly as error:
        return f"{model_type}: {error}"
    except Exception as error:  # noqa: BLE001 - a family the small config does not build is listed, not grown
        return f"{model_type} does not build small: {type(error).__name__}: {error}"
    return None


def skip_unless_built(model_type: str) -> None:
    """Skip the test, with the reason, for a model type the zoo does not grow."""
    reason = unbuilt_reason(model_type)
    if reason is not None:
        pytest.skip(reason)


def xfail_refusal(model_type: str, method: str, error: ValueError) -> None:
    """A refusal of growth_ops is expected only with a reason that names what stops growth."""
    assert len(str(error)) > 40, error
    pytest.xfail(f"{model_type} refuses {method}: {error}")


def growth_failure(model_type: str, method: str, tmp_path: Path | None = None) -> str | None:
    """Grow a small `model_type` by `spec_for(method, ...)` and check it whole; `None`, or why not.

    Checked: layer count, `layer_idx` on every module (as a model built from the grown config has them), no
    storage shared between layers, tied embeddings kept, cached generation equal to uncached (unless the
    family's own cache already differs before growth, as cpmant's does in transformers 5.24: no fault of
    growth), and for a growth that keeps the function (identity, width) the logits (fp32, 1e-5) and the
    generated tokens equal to the model's before growth. With `tmp_path`, also that the grown model saves and
    loads back to the same logits.
    """
    model = build_small(model_type)
    num_layers = discover_anatomy(model).num_layers
    spec = spec_for(method, num_layers)
    ids = input_ids()
    before = logits(model, ids)
    generated = _generations(model, ids)
    tied = _is_tied(model)
    plan = spec.plan_depth(num_layers)
    grow(model, spec)
    layers = model.get_submodule(discover_anatomy(model).layers_path)
    if len(layers) != plan.num_layers:
        return f"{len(layers)} layers after growth, expected {plan.num_layers}"
    fresh = _fresh_layer_indices(model)
    grown = {n: m.layer_idx for n, m in model.named_modules() if isinstance(getattr(m, "layer_idx", None), int)}
    if grown != fresh:
        wrong = sorted(n for n in grown.keys() | fresh.keys() if grown.get(n) != fresh.get(n))[:3]
        return f"layer_idx differs from a model built from the grown config at {wrong}"
    pointers = [p.data_ptr() for layer in layers for p in layer.parameters()]
    if len(pointers) != len(set(pointers)):
        return "layers share parameter storage after growth"
    if tied and not _is_tied(model):
        return "the output embeddings are no longer tied to the input embeddings"
    if method in FUNCTION_PRESERVING:
        change = float((logits(model, ids) - before).abs().max())
        if change > 1e-5:
            return f"{method} growth changed the logits by {change:.3g}"
        if _generations(model, ids) != generated:
            return f"{method} growth changed the generated tokens"
    cached, uncached = _generations(model, ids)
    if generated[0] == generated[1] and cached != uncached:
        return "cached generation differs from uncached"
    if tmp_path is not None:
        model.save_pretrained(tmp_path)
        loaded = type(model).from_pretrained(tmp_path, attn_implementation="eager").eval()
        change = float((logits(loaded, ids) - logits(model, ids)).abs().max())
        if change > 1e-6:
            return f"the grown model saved and loaded back gives logits that differ by {change:.3g}"
    return None


def _fresh_layer_indices(model: PreTrainedModel) -> dict[str, int]:
    """Every integer `layer_idx` of a model built on the meta device from `model`'s (grown) config."""
    with torch.device("meta"):
        fresh = type(model)(model.config)
    return {n: m.layer_idx for n, m in fresh.named_modules() if isinstance(getattr(m, "layer_idx", None), int)}


def _is_tied(model: PreTrainedModel) -> bool:
    output = model.get_output_embeddings()
    return output is not None and getattr(output, "weight", None) is model.get_input_embeddings().weight


def _generations(model: PreTrainedModel, ids: torch.Tensor) -> tuple[list, list]:
    """Three greedy tokens, with the cache and without."""
    kwargs = dict(max_new_tokens=3, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
    return tuple(model.generate(ids, use_cache=use_cache, **kwargs).tolist() for use_cache in (True, False))


def snapshot(model):
    """What a failed growth must leave as it was: config, tensors (and their storage), layer_idx, modules."""
    return (
        model.config.to_dict(),
        [(k, v.data_ptr(), v.clone()) for k, v in model.state_dict().items()],
        [(n, m.layer_idx) for n, m in model.named_modules() if hasattr(m, "layer_idx")],
        [id(m) for m in model.modules()],
    )


def assert_unchanged(model, before):
    config, tensors, indices, module_ids = before
    assert model.config.to_dict() == config
    state = model.state_dict()
    assert list(state) == [k for k, _, _ in tensors]
    for key, pointer, values in tensors:
        assert state[key].data_ptr() == pointer and torch.equal(state[key], values), key
    assert [(n, m.layer_idx) for n, m in model.named_modules() if hasattr(m, "layer_idx")] == indices
    assert [id(m) for m in model.modules()] == module_ids
