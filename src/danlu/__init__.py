"""danlu (丹炉): a reproducible, auditable pipeline for fine-tuning LLMs."""

__version__ = "0.1.0"
