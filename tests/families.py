"""Tiny local stand-ins for real model families, each with its real chat template.

`tests/fixtures/families/<name>.json` holds, per family, the checkpoint's chat
template copied verbatim from a public copy of its tokenizer_config.json (the
source and the cross-checks are recorded in the file), its special tokens, the
tokens that end an assistant turn, and the architecture-specific config keys.

`build_family_model` turns one of them into an ordinary Hugging Face directory:
a byte-level BPE tokenizer trained here on a small Chinese/English corpus, with
the family's special tokens as single ids and the exact template, and a seeded
random model of the family's transformers class at toy size. Every Linear layer's
input width is a multiple of 128, so GPTQ/AWQ group size 128 divides it.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "families"

FAMILIES: list[str] = [
    "qwen2.5",
    "qwen3",
    "llama3.1",
    "deepseek-r1-distill-qwen",
    "mistral-v0.3",
    "gemma3",
    "glm4",
]

# Toy sizes shared by every family: 2 heads of 64 over a 128-wide residual, one
# KV head, and a 256-wide MLP, so q/k/v/o, gate/up and down all read 128 or 256.
SHAPE = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "max_position_embeddings": 2048,
}
VOCAB_SIZE = 1536


def load_family(name: str) -> dict:
    """The fixture of one family (see the module docstring for its fields)."""
    if name not in FAMILIES:
        raise KeyError(f"unknown family {name!r}; known: {', '.join(FAMILIES)}")
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def special_tokens(spec: dict) -> list[str]:
    """bos/eos/pad/unk and the additional special tokens, each once, in that order."""
    tokens = [spec[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")]
    tokens += spec["additional_special_tokens"]
    return list(dict.fromkeys(t for t in tokens if t))


def default_corpus(seed: int = 0, lines: int = 3000) -> str:
    """Mixed Chinese/English finance-flavoured text with digits, punctuation and
    a little JSON, so merges cover what chat templates and SFT data contain."""
    rng = random.Random(seed)
    zh = [
        "本公司二〇二三年营业收入同比增长百分之十二",
        "请根据以下材料回答问题，并给出理由。",
        "央行宣布下调存款准备金率零点五个百分点。",
        "该基金的风险等级为中低风险，适合稳健型投资者。",
        "以下是关于会计的单项选择题，请选出正确答案。",
        "资产负债表、利润表和现金流量表是三大财务报表。",
        "你好！我是一个人工智能助手，很高兴为你服务。",
        "债券收益率上升，股票市场出现回调。",
        "用户问：如何计算复利？助手答：本金乘以一加利率的n次方。",
    ]
    en = [
        "The company reported revenue of 12.5 billion yuan, up 8% year over year.",
        "You are a helpful assistant. Answer the question step by step.",
        "Interest rates rose while the bond market stayed calm.",
        "Please summarise the following quarterly report in three sentences.",
        "Hello, how are you today? I'm fine, thank you!",
        "def add(a, b):\n    return a + b",
        "Think carefully before you answer; show your reasoning first.",
    ]
    out = []
    for i in range(lines):
        kind = rng.random()
        if kind < 0.45:
            out.append(rng.choice(zh) + f"（第{i}条）")
        elif kind < 0.85:
            out.append(rng.choice(en) + f" ({i})")
        else:
            record = {"role": rng.choice(["user", "assistant", "system"]),
                      "content": rng.choice(zh + en), "id": i}
            out.append(json.dumps(record, ensure_ascii=rng.random() < 0.5))
    return "\n".join(out) + "\n"


def build_tokenizer(spec: dict, corpus_text: str, vocab_size: int = VOCAB_SIZE):
    """A byte-level BPE PreTrainedTokenizerFast carrying the family's tokens and template."""
    from tokenizers import (
        AddedToken,
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    specials = special_tokens(spec)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus_text.splitlines(), trainer)
    if spec["added_tokens"]:
        # Added to the real vocabulary but not special: decode(skip_special_tokens=True) keeps them.
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in spec["added_tokens"]])
    if spec["add_bos_token"]:
        # The real tokenizer prepends BOS itself (on top of the template's own bos_token).
        bos = spec["bos_token"]
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B:1", special_tokens=[(bos, tok.token_to_id(bos))]
        )
    extra = [t for t in spec["additional_special_tokens"]
             if t not in {spec[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")}]
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=spec["bos_token"],
        eos_token=spec["eos_token"],
        pad_token=spec["pad_token"],
        unk_token=spec["unk_token"],
        additional_special_tokens=extra,
        model_max_length=SHAPE["max_position_embeddings"],
    )
    fast.chat_template = spec["chat_template"]
    return fast


def _ids(tokenizer, tokens: list[str]) -> list[int]:
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id in ids:
        raise ValueError(f"a token of {tokens} is not in the vocabulary")
    return ids


def _one_or_list(ids: list[int]):
    return ids[0] if len(ids) == 1 else ids


def build_config(spec: dict, tokenizer):
    """The family's config class at toy size: the checkpoint's architecture keys
    (`config`), what cannot hold at toy size overridden (`tiny_config`), and the
    family's token ids."""
    from transformers import AutoConfig

    arch = {**spec["config"], **spec["tiny_config"]}
    if "layer_types" in arch and len(arch["layer_types"]) != SHAPE["num_hidden_layers"]:
        raise ValueError("layer_types must have one entry per layer")
    token = tokenizer.convert_tokens_to_ids
    eos = _ids(tokenizer, spec["config_eos_tokens"])
    config = AutoConfig.for_model(
        spec["model_type"],
        vocab_size=len(tokenizer),
        **SHAPE,
        bos_token_id=token(spec["config_bos_token"]) if spec["config_bos_token"] else None,
        eos_token_id=_one_or_list(eos),
        pad_token_id=tokenizer.pad_token_id,
        **arch,
    )
    config.architectures = [spec["architecture"]]
    return config


def build_family_model(
    name: str, out_dir: Path, corpus_text: str | None = None, seed: int = 0
) -> Path:
    """Write family `name` as a Hugging Face model directory at `out_dir` and return it."""
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig

    spec = load_family(name)
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(spec, corpus_text if corpus_text is not None else default_corpus(seed))
    config = build_config(spec, tokenizer)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    if type(model).__name__ != spec["architecture"]:
        raise TypeError(f"{name}: built {type(model).__name__}, want {spec['architecture']}")
    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.in_features % 128:
            raise ValueError(f"{name}: {module_name} reads {module.in_features}, not a multiple of 128")
    gen_bos = spec["generation_bos_token"]
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids(gen_bos) if gen_bos else None,
        eos_token_id=_one_or_list(_ids(tokenizer, spec["generation_eos_tokens"])),
        pad_token_id=tokenizer.pad_token_id,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
