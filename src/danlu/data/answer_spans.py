"""Where the assistant answers lie in a conversation rendered by the model's
own chat template: the character spans that training learns, all else masked.

Two ways, tried in order:

1. Prefix-stable templates (ChatML, Llama-3, Gemma, Qwen2.5): rendering a
   conversation's start gives a prefix of the whole, so each answer runs from
   the end of its prompt (with the generation prompt) to the end of the
   rendering through that answer, end-of-turn tokens included.
2. Templates that rewrite history (DeepSeek-R1 hoists the system prompt and
   cuts thoughts from every answer, Qwen3 drops thoughts from earlier turns,
   Mistral moves the system text into the last user turn): the example is the
   template's prompt for the final answer followed by that answer, as the model
   sees it at inference. The template's frame around an answer (its header,
   the end-of-turn text, what the generation prompt already opens) is probed
   by rendering placeholder texts; earlier answers are found in the prompt the
   same way, as the template rendered them.

Reasoning data (answers holding `<think>…</think>`) trains the model to think:
with `enable_thinking` (LLaMA-Factory's key, default true) the final answer
keeps its thoughts in the target, also where the template would cut them, and
an answer without thoughts gets an empty thought block where the template's
generation prompt opens one; earlier answers keep or lose theirs as the
template renders them. With `enable_thinking: false` thoughts are removed from
every answer and an empty thought block, if the template opens one, belongs to
the prompt (masked), as in LLaMA-Factory.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from danlu.errors import UserError

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_THOUGHT = re.compile(r"^\s*<think>(.*?)</think>\s*", re.DOTALL)
# Private-use code points: no tokenizer or template gives them meaning, and
# trim/split filters in templates leave them as they are.
_ANSWER = "\ue000danlu-answer\ue001"
_USER = "\ue000danlu-user\ue001"

Spans = list[tuple[int, int]]


class TemplateError(UserError, ValueError):
    """The chat template cannot be split into prompt and answer spans."""


def split_thought(content: str) -> tuple[str | None, str]:
    """(thought, answer) of an answer that opens with `<think>…</think>`;
    (None, content) otherwise."""
    match = _THOUGHT.match(content)
    if match is None:
        return None, content
    return match.group(1).strip("\n"), content[match.end():]


def without_thought(message: dict) -> dict:
    if message["role"] != "assistant":
        return message
    return {**message, "content": split_thought(message["content"])[1]}


def conversation_spans(tokenizer, messages: Sequence[dict], enable_thinking: bool = True
                       ) -> tuple[str, Spans]:
    """(text to tokenise, answer spans). The text is the template's rendering; spans are [start, end) character
    ranges of what is learnt. Raises TemplateError naming the template and
    the turn when the template cannot be mapped."""
    messages = [dict(m) for m in messages]
    if not enable_thinking:
        messages = [without_thought(m) for m in messages]

    def render(msgs: Sequence[dict], generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            list(msgs), tokenize=False, add_generation_prompt=generation_prompt,
            enable_thinking=enable_thinking)

    where = f"chat template of {getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'}"
    text, spans = (_prefix_stable(render, messages, enable_thinking)
                          or _per_turn(render, messages, where, enable_thinking))
    if spans and tokenizer.eos_token and _nothing_ends_a_turn(render, messages):
        # GLM-4 closes an answer with nothing: the final one learns to stop
        # with eos, as LLaMA-Factory's efficient_eos does.
        text += tokenizer.eos_token
        spans[-1] = (spans[-1][0], len(text))
    return text, spans


def _nothing_ends_a_turn(render: Callable, messages: list[dict]) -> bool:
    last = len(messages) - 1
    probe = [*messages[:last], {"role": "assistant", "content": _ANSWER}]
    return render(probe, False).endswith(_ANSWER)


def _prefix_stable(render: Callable, messages: list[dict], enable_thinking: bool
                   ) -> tuple[str, Spans] | None:
    full = render(messages, False)
    spans = []
    for i, msg in enumerate(messages):
        if msg["role"] != "assistant":
            continue
        prompt = render(messages[:i], True)
        through = render(messages[: i + 1], False)
        if not (full.startswith(through) and through.startswith(prompt)):
            return None
        spans.append((len(prompt), len(through)))
    if enable_thinking and spans and not _keeps_final_thought(full, spans[-1], messages[-1]):
        return None  # the template cut the final answer's thoughts: rebuild it per turn
    return full, spans


def _keeps_final_thought(full: str, span: tuple[int, int], message: dict) -> bool:
    thought, _ = split_thought(message["content"])
    return not thought or thought in full[span[0]:span[1]]


class _Frame:
    """The template's text around an answer, probed with placeholders:
    `tail` follows the user text in the prompt (it ends with the generation
    prompt), `header` starts the answer where the generation prompt does not
    already, `opened` is what the generation prompt adds beyond the rendered
    answer's start (DeepSeek-R1's `<think>\\n`), `end` closes the answer."""

    def __init__(self, render: Callable, messages: list[dict], turn: int, where: str):
        user = {**messages[turn - 1], "content": _USER}
        before = [*messages[: turn - 1], user]
        prompt = render(before, True)
        through = render([*before, {"role": "assistant", "content": _ANSWER}], False)
        if not (_USER in prompt and _USER in through and _ANSWER in through
                and through.index(_USER) < through.index(_ANSWER)):
            raise TemplateError(f"{where}: the template does not render turn {turn} after its "
                                "question, so the answer cannot be located")
        self.tail = prompt[prompt.index(_USER) + len(_USER):]
        after_user = through[through.index(_USER) + len(_USER):]
        between, self.end = after_user.split(_ANSWER, 1)
        if between.startswith(self.tail):
            self.header, self.opened = between[len(self.tail):], ""
        elif self.tail.startswith(between):
            self.header, self.opened = "", self.tail[len(between):]
        else:
            raise TemplateError(f"{where}: at turn {turn} the generation prompt {self.tail!r} "
                                f"does not lead into the rendered answer {between!r}")


def _per_turn(render: Callable, messages: list[dict], where: str, enable_thinking: bool
              ) -> tuple[str, Spans]:
    last = len(messages) - 1
    if messages[last]["role"] != "assistant" or last < 1:
        raise TemplateError(f"{where}: a conversation must end with an assistant turn")
    frame = _Frame(render, messages, last, where)
    prompt = render(messages[:last], True)
    whole = render(messages, False)
    if whole.startswith(prompt) and (not enable_thinking or _keeps_final_thought(
            whole, (len(prompt), len(whole)), messages[last])):
        # Only history is rewritten (Qwen3): the final answer is as rendered.
        completion, prompt_extra = whole[len(prompt):], ""
    else:
        if not prompt.endswith(frame.tail):
            raise TemplateError(f"{where}: at turn {last} the prompt does not end with the "
                                "template's generation prompt")
        answer = _final_answer(render, messages, enable_thinking)
        completion, prompt_extra = _completion(answer, frame, where, last, enable_thinking)
    text = prompt + prompt_extra + completion
    spans = [*_history_spans(render, messages, prompt, frame, where),
             (len(prompt) + len(prompt_extra), len(text))]
    return text, spans


def _final_answer(render: Callable, messages: list[dict], enable_thinking: bool) -> str:
    """The final answer as the template renders a last turn; its own thoughts
    where the template cut them and thinking is on."""
    last = len(messages) - 1
    probe = render([*messages[:last], {"role": "assistant", "content": _ANSWER}], False)
    pre, post = probe.split(_ANSWER, 1)
    full = render(messages, False)
    raw = messages[last]["content"]
    if full.startswith(pre) and full.endswith(post) and len(pre) + len(post) <= len(full):
        rendered = full[len(pre): len(full) - len(post)]
    else:
        rendered = raw
    thought, _ = split_thought(raw)
    if enable_thinking and thought and thought not in rendered:
        return raw
    return rendered


def _completion(answer: str, frame: _Frame, where: str, turn: int, enable_thinking: bool
                ) -> tuple[str, str]:
    """(what the model learns after the prompt, text that joins the prompt
    first): the header, the answer less what the generation prompt opened,
    the end of turn."""
    if not frame.opened:
        return frame.header + answer + frame.end, ""
    if answer.startswith(frame.opened):
        return answer[len(frame.opened):] + frame.end, ""
    if frame.opened.strip() != THINK_OPEN:
        raise TemplateError(f"{where}: at turn {turn} the generation prompt opens "
                            f"{frame.opened!r}, which the answer does not start with")
    thought, reply = split_thought(answer)
    body = f"{thought or ''}\n{THINK_CLOSE}\n\n"
    if thought is None and not enable_thinking:
        return reply + frame.end, body  # the empty thought is given, not learnt
    return body + reply + frame.end, ""


def _history_spans(render: Callable, messages: list[dict], prompt: str, frame: _Frame,
                   where: str) -> Spans:
    """Earlier answers as the template rendered them inside the final prompt,
    each from where the model's own writing starts (after that turn's
    generation prompt) through its end-of-turn text."""
    last = len(messages) - 1
    spans = []
    for turn, msg in enumerate(messages[:last]):
        if msg["role"] != "assistant":
            continue
        probe = [*messages[:last]]
        probe[turn] = {**msg, "content": _ANSWER}
        pre, post = render(probe, True).split(_ANSWER, 1)
        if not (prompt.startswith(pre) and prompt.endswith(post)
                and len(pre) + len(post) <= len(prompt)):
            raise TemplateError(f"{where}: turn {turn}'s answer cannot be located in the "
                                "rendered conversation")
        probe[turn - 1] = {**probe[turn - 1], "content": _USER}
        framed = render(probe, True)
        if _USER not in framed or framed.index(_USER) > framed.index(_ANSWER):
            raise TemplateError(f"{where}: turn {turn} is not rendered after its question")
        between = framed[framed.index(_USER) + len(_USER): framed.index(_ANSWER)]
        header = between[len(frame.tail):] if between.startswith(frame.tail) else ""
        if not (between.startswith(frame.tail) or frame.tail.startswith(between)) \
                or not post.startswith(frame.end):
            raise TemplateError(f"{where}: turn {turn} is framed unlike the final answer")
        spans.append((len(pre) - len(header), len(prompt) - len(post) + len(frame.end)))
    return spans
