"""The demo base model: a tiny Llama with random weights, built locally.

`base_model: demo` in the config points here. The result is an ordinary Hugging
Face directory (config, safetensors, tokenizer, chat template), so every later
stage loads it with `from_pretrained(path)` exactly as it would load
`Qwen/Qwen2.5-7B-Instruct`; nothing downstream knows it is a demo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from danlu.config import stage_params
from danlu.data.templates import CHATML

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@dataclass(frozen=True)
class DemoModelShape:
    """Sizes of the demo Llama. Every quantised layer's input width (hidden,
    intermediate) is a multiple of 128 so GPTQ/AWQ group size 128 divides it."""

    vocab_size: int = 6144
    hidden_size: int = 256
    intermediate_size: int = 512
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 2048
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("hidden_size", "intermediate_size"):
            if getattr(self, name) % 128:
                raise ValueError(f"{name} must be a multiple of 128 for 4-bit group quantisation")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be divisible by num_attention_heads")


def train_tokenizer(corpus: Path, vocab_size: int):
    """A byte-level BPE tokenizer trained on `corpus`: byte fallback means any
    text (Chinese included) encodes, and merges learnt on finance text keep
    sequences short."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train([str(corpus)], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        model_max_length=None,
    )
    fast.chat_template = CHATML
    return fast


def build_demo_model(out_dir: Path, corpus: Path, shape: DemoModelShape | None = None) -> dict:
    """Write the tokenizer and a seeded random Llama to `out_dir`; return its facts."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    shape = shape or DemoModelShape()
    tokenizer = train_tokenizer(corpus, shape.vocab_size)
    tokenizer.model_max_length = shape.max_position_embeddings
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads,
        max_position_embeddings=shape.max_position_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    torch.manual_seed(shape.seed)
    model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        **{k: v for k, v in shape.__dict__.items() if k != "vocab_size"},
    }


def main(args) -> None:
    from danlu.outputs import atomic_dir
    from danlu.stage import run_stage

    params = stage_params(args, "demo")
    shape = DemoModelShape(**params["model"])
    out = Path(args.out)

    def work(run):
        with atomic_dir(out) as tmp:
            return build_demo_model(tmp, Path(args.corpus), shape)

    run_stage("demo_model", params, work, inputs=[args.corpus, *args.code], outputs=[out],
              manifest_path=Path(args.manifest))
