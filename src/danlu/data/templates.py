"""Chat templates used when a tokenizer ships none (the `template` config key).

Real models (Qwen2.5, Llama-3, DeepSeek-R1-Distill) carry their own template in
`tokenizer_config.json` and that one always wins; these are for base models and
the demo. Each is a Jinja string in the form `tokenizer.apply_chat_template` reads.
"""

from __future__ import annotations

CHATML = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

LLAMA3 = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
    " + message['content'] | trim + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{%- endif %}"
)

# Alpaca's prompt format, for base models trained without chat tokens.
ALPACA = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'system' %}{{- message['content'] + '\\n\\n' }}"
    "{%- elif message['role'] == 'user' %}"
    "{{- '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' }}"
    "{%- else %}{{- message['content'] + eos_token + '\\n\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
)

TEMPLATES = {"chatml": CHATML, "qwen": CHATML, "llama3": LLAMA3, "alpaca": ALPACA}

# Strings that only a chat template may produce; found inside user data they let
# a record forge turns, so clean rejects them (reason `special_tokens`).
SPECIAL_TOKENS = (
    "<|im_start|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eot_id|>",
    "<｜begin▁of▁sentence｜>",
    "<｜end▁of▁sentence｜>",
    "[INST]",
    "[/INST]",
    "<s>",
    "</s>",
)


def resolve_template(name: str) -> str:
    """The Jinja template called `name`; raises ValueError naming the choices."""
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(
            f"unknown template {name!r}; choose one of {', '.join(sorted(TEMPLATES))}"
        ) from None
