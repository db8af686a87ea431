"""Chat rendering shared by the tool-call formats: our system text, then the sample's turns, through
the tokenizer's own chat template (the formats put tools in the system text because small models'
templates, SmolLM2's included, ignore ``tools=``)."""

from __future__ import annotations

import json
from typing import Any, Callable

from itool.errors import ItoolError
from itool.schemas import Message, Sample, ToolCall


def chat_messages(system_text: str, messages: list[Message], render_answer: Callable[[list[ToolCall]], str]) -> list[dict]:
    """The conversation as template messages; the sample's own system messages follow our system text."""
    extra_system = [m.content for m in messages if m.role == "system" and m.content]
    chat = [{"role": "system", "content": "\n\n".join([system_text, *extra_system])}]
    for message in messages:
        if message.role == "system":
            continue
        if message.role == "assistant" and message.tool_calls:
            chat.append({"role": "assistant", "content": render_answer(message.tool_calls)})
        elif message.role == "tool":
            chat.append({"role": "tool", "content": message.content, "name": message.name or ""})
        else:
            chat.append({"role": message.role, "content": message.content})
    return chat


def tool_results_as_user(chat: list[dict]) -> list[dict]:
    """For templates without a ``tool`` role: tool results become user text naming the function."""
    return [
        {"role": "user", "content": f"Result of {m['name'] or 'the function'}: {m['content']}"} if m["role"] == "tool" else m
        for m in chat
    ]


def render_chat(system_text: str, messages: list[Message], render_answer: Callable[[list[ToolCall]], str], tokenizer: Any) -> str:
    """The prompt text up to where the assistant's answer starts."""
    from jinja2.exceptions import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        raise ItoolError("the model's tokenizer has no chat template; use an instruct/chat model")
    chat = chat_messages(system_text, messages, render_answer)
    try:
        return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    except TemplateError:
        if not any(m["role"] == "tool" for m in chat):
            raise
    return tokenizer.apply_chat_template(tool_results_as_user(chat), tokenize=False, add_generation_prompt=True)


class ToolListPrompt:
    """Prompting shared by the call formats: the instructions, then the tools as JSON (BFCL's style),
    then the conversation through the chat template. A format adds ``render_answer`` and ``parse``."""

    opts: Any

    def system_text(self, sample: Sample) -> str:
        tools = json.dumps(sample.tools, ensure_ascii=False)
        return f"{self.opts.system_prompt}\n\nHere is a list of functions in JSON format that you can invoke:\n{tools}"

    def render_prompt(self, sample: Sample, tokenizer: Any) -> str:
        return render_chat(self.system_text(sample), sample.messages, self.render_answer, tokenizer)

    def render_answer(self, calls: list[ToolCall]) -> str:
        raise NotImplementedError
