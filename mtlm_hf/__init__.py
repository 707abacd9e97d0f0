"""The MTLM model family as a native Transformers model.

Importing this package registers model_type ``mtlm`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM``, and marks the classes for ``auto_map`` so that ``save_pretrained`` writes
a folder that loads with ``trust_remote_code=True`` where this package is not installed.

That registration is why most users import the package, so it loads only the configuration and the
model (as importing transformers' own Llama does); every other name loads on first use (PEP 562):
publishing pulls the Hub client and the weights I/O, the tokenizer sentencepiece.
"""

import importlib
from typing import TYPE_CHECKING, Any

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_mtlm import MTLM_PRESETS, MTLMConfig
from .modeling_mtlm import MTLMForCausalLM, MTLMModel, MTLMPreTrainedModel

if TYPE_CHECKING:
    from .llama_interop import from_llama, to_llama
    from .original_m1 import import_original_m1
    from .publishing import PublishError, check_can_publish, publish
    from .tokenization import mistral_tokenizer

AutoConfig.register(MTLMConfig.model_type, MTLMConfig, exist_ok=True)
AutoModel.register(MTLMConfig, MTLMModel, exist_ok=True)
AutoModelForCausalLM.register(MTLMConfig, MTLMForCausalLM, exist_ok=True)
MTLMConfig.register_for_auto_class()
MTLMModel.register_for_auto_class("AutoModel")
MTLMForCausalLM.register_for_auto_class("AutoModelForCausalLM")

# Public name -> the submodule that defines it, imported on first access.
_LAZY_NAMES = {
    "PublishError": "publishing",
    "publish": "publishing",
    "check_can_publish": "publishing",
    "from_llama": "llama_interop",
    "to_llama": "llama_interop",
    "import_original_m1": "original_m1",
    "mistral_tokenizer": "tokenization",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY_NAMES})


__all__ = [
    "MTLM_PRESETS",
    "MTLMConfig",
    "MTLMForCausalLM",
    "MTLMModel",
    "MTLMPreTrainedModel",
    "PublishError",
    "check_can_publish",
    "from_llama",
    "import_original_m1",
    "mistral_tokenizer",
    "publish",
    "to_llama",
]
