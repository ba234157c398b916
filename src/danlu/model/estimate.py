"""`danlu estimate`: expected peak GPU memory of a QLoRA/LoRA run, before
anything loads, from the model's config.json and the train settings.

The terms (bytes), for P base parameters, L layers, hidden h, batch tokens T:
  weights      nf4: P_linear * (4 + c) / 8, c the bits per parameter of the
               block constants (QLoRA, Dettmers et al. 2023: one fp32 absmax per
               64 weights is 32/64 = 0.5 bits; double quantisation stores it in
               8 bits plus one fp32 per 256 blocks, 8/64 + 32/(64*256) = 0.127
               bits), rest in 16-bit; none: all P in 16-bit
  lora         r * (in + out) per adapted linear layer, in fp32, x4 with Adam
               (weights, grads, two moments; 8-bit paged Adam halves the moments)
  activations  with checkpointing: one hidden state per layer boundary plus one
               layer recomputed; without: ~34 * h bytes per token per layer
               (Korthikanti et al. 2022, 16-bit, no recompute) plus attention
  logits       T * vocab * 4 bytes (fp32 upcast for the loss), x2 for the grad
  overhead     CUDA context and allocator slack, a flat 1 GiB
It is an estimate: the point is choosing batch, cutoff and checkpointing
before renting the GPU, and it agrees with measured peaks to within ~20%.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from danlu.config import from_mapping, load_config
from danlu.errors import UsageError
from danlu.model.loading import ModelError

GIB = 2**30
NF4_BITS = 4
BLOCK = 64  # weights per nf4 quantisation block
ABSMAX_BITS = 32 / BLOCK  # one fp32 absmax per block
DOUBLE_QUANT_BITS = 8 / BLOCK + 32 / (BLOCK * 256)  # 8-bit absmax, fp32 per 256 blocks

# Shapes of well-known models (their config.json), for estimates and for the
# random-weight 7B benchmark model; `danlu estimate` prefers the real config.
SHAPES = {
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
               num_attention_heads=32, num_key_value_heads=32, vocab_size=32000),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, num_key_value_heads=8, vocab_size=128256),
    "qwen2.5-32b": dict(hidden_size=5120, intermediate_size=27648, num_hidden_layers=64,
                        num_attention_heads=40, num_key_value_heads=8, vocab_size=152064),
}


@dataclass(frozen=True)
class Shape:
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    tie_word_embeddings: bool = False

    @classmethod
    def from_config(cls, cfg: dict) -> Shape:
        cfg = cfg.get("text_config", cfg)
        return cls(
            hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=cfg["num_attention_heads"],
            num_key_value_heads=cfg.get("num_key_value_heads", cfg["num_attention_heads"]),
            vocab_size=cfg["vocab_size"], tie_word_embeddings=cfg.get("tie_word_embeddings", False),
        )

    def linear_layers(self) -> list[tuple[str, int, int]]:
        """(name, in, out) of each decoder layer's linear layers (Llama/Qwen layout)."""
        h, kv = self.hidden_size, self.hidden_size // self.num_attention_heads * self.num_key_value_heads
        i = self.intermediate_size
        return [("q_proj", h, h), ("k_proj", h, kv), ("v_proj", h, kv), ("o_proj", h, h),
                ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]


def estimate_memory(shape: Shape, *, quantization: str, double_quant: bool, lora_r: int,
                    lora_target, batch_size: int, cutoff_len: int, gradient_checkpointing: bool,
                    optim: str, packing: bool, num_processes: int = 1,
                    fsdp: bool = False) -> dict:
    """Bytes per device, by term, and the total in GiB."""
    L, h, V = shape.num_hidden_layers, shape.hidden_size, shape.vocab_size
    layers = shape.linear_layers()
    linear_params = L * sum(i * o for _, i, o in layers)
    embed_params = V * h * (1 if shape.tie_word_embeddings else 2)
    if quantization == "nf4":
        constants = DOUBLE_QUANT_BITS if double_quant else ABSMAX_BITS
        weights = linear_params * (NF4_BITS + constants) / 8 + embed_params * 2
    else:
        weights = (linear_params + embed_params) * 2
    if fsdp and num_processes > 1:
        weights /= num_processes
    targets = {n for n, _, _ in layers} if lora_target == "all-linear" else set(
        [lora_target] if isinstance(lora_target, str) else lora_target)
    lora_params = L * sum(lora_r * (i + o) for n, i, o in layers if n in targets)
    moments = 2 if "8bit" in optim else 8  # bytes per parameter for Adam's two moments
    lora = lora_params * (4 + 4 + moments)
    tokens = batch_size * cutoff_len  # packing fills rows, padding wastes the rest: same bound
    if gradient_checkpointing:
        activations = tokens * h * 2 * L + tokens * 34 * h
    else:
        activations = tokens * 34 * h * L
    heads = shape.num_attention_heads
    attention = 0 if packing else batch_size * heads * cutoff_len**2 * 2  # eager/padded worst case
    logits = tokens * V * 4 * 2
    overhead = 1 * GIB
    terms = {"weights": weights, "lora_and_optimizer": lora, "activations": activations,
             "attention_scores": attention, "logits": logits, "overhead": overhead}
    total = sum(terms.values())
    return {
        "per_device_gib": round(total / GIB, 2),
        "terms_gib": {k: round(v / GIB, 2) for k, v in terms.items()},
        "base_parameters_b": round((linear_params + embed_params) / 1e9, 2),
        "lora_parameters_m": round(lora_params / 1e6, 2),
        "tokens_per_micro_batch": tokens,
    }


def main(args) -> None:
    from danlu.config import TrainConfig
    from danlu.model.loading import model_config, resolve_model_path

    config = load_config(args.config)
    cfg = from_mapping(TrainConfig, config["train"])
    if args.shape:
        shape, source = Shape(**SHAPES[args.shape]), f"preset {args.shape}"
    else:
        model = "results/demo_model/model" if config["base_model"] == "demo" else config["base_model"]
        try:
            shape = Shape.from_config(model_config(resolve_model_path(model, config["base_model_revision"])))
        except ModelError as err:
            raise UsageError(f"{err}; pass --shape ({', '.join(SHAPES)}) to estimate offline") from None
        source = model
    cutoff = args.cutoff_len or _planned_cutoff(config)
    result = estimate_memory(
        shape, quantization=cfg.quantization, double_quant=cfg.double_quant, lora_r=cfg.lora_r,
        lora_target=cfg.lora_target, batch_size=cfg.per_device_train_batch_size,
        cutoff_len=cutoff, gradient_checkpointing=cfg.gradient_checkpointing,
        optim=cfg.optim if cfg.optim != "auto" else "paged_adamw_8bit", packing=cfg.packing,
        num_processes=cfg.num_processes,
        fsdp="fsdp" in (cfg.accelerate_config or ""),
    )
    result = {"model": source, "cutoff_len": cutoff, **result}
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return
    print(f"danlu estimate: {source}, {result['base_parameters_b']} B parameters, "
          f"{cfg.quantization}, LoRA r={cfg.lora_r} ({result['lora_parameters_m']} M), "
          f"batch {cfg.per_device_train_batch_size} x cutoff_len {cutoff}")
    for term, gib in result["terms_gib"].items():
        print(f"  {term:<20} {gib:8.2f} GiB")
    print(f"  {'peak per device':<20} {result['per_device_gib']:8.2f} GiB")


def _planned_cutoff(config: dict) -> int:
    """The cutoff training will use: decided (results/lengths/cutoff.json),
    else fixed in config, else the upper clamp (the worst case)."""
    decided = Path("results/lengths/cutoff.json")
    if config["lengths"]["cutoff_len"] != "auto":
        return int(config["lengths"]["cutoff_len"])
    if decided.is_file():
        return int(json.loads(decided.read_text(encoding="utf-8"))["cutoff_len"])
    return int(config["lengths"]["max_cutoff"])
