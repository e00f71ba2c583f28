"""Numpy Gemma 3 forward pass used to capture real K/V activations and to evaluate
quantized KV caches (see README.md)."""

from .attention import causal_attention
from .model import Gemma3Model
from .weights import Gemma3Config, default_model_path, load_gguf

__all__ = ["Gemma3Model", "Gemma3Config", "causal_attention", "default_model_path", "load_gguf"]
