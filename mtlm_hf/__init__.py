"""The MTLM model family as a native Transformers model.

Importing this package registers model_type ``mtlm`` with ``AutoConfig``, ``AutoModel`` and
``AutoModelForCausalLM``, and marks the classes for ``auto_map`` so that ``save_pretrained`` writes
a folder that loads with ``trust_remote_code=True`` where this package is not installed.
"""

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

from .configuration_mtlm import MTLM_PRESETS, MTLMConfig
from .llama_interop import from_llama, to_llama
from .modeling_mtlm import MTLMForCausalLM, MTLMModel, MTLMPreTrainedModel
from .original_m1 import import_original_m1
from .publishing import PublishError, publish
from .tokenization import mistral_tokenizer

AutoConfig.register(MTLMConfig.model_type, MTLMConfig, exist_ok=True)
AutoModel.register(MTLMConfig, MTLMModel, exist_ok=True)
AutoModelForCausalLM.register(MTLMConfig, MTLMForCausalLM, exist_ok=True)
MTLMConfig.register_for_auto_class()
MTLMModel.register_for_auto_class("AutoModel")
MTLMForCausalLM.register_for_auto_class("AutoModelForCausalLM")

__all__ = [
    "MTLM_PRESETS",
    "MTLMConfig",
    "MTLMForCausalLM",
    "MTLMModel",
    "MTLMPreTrainedModel",
    "PublishError",
    "from_llama",
    "import_original_m1",
    "mistral_tokenizer",
    "publish",
    "to_llama",
]
