"""Request bodies -> token ids: chat messages (with tools) and completion prompts."""

from __future__ import annotations

import weakref

from hepta.infer.tools import tool_chat_messages
from hepta.serve.errors import APIError
from hepta.serve.schemas import ChatCompletionRequest, ChatMessage, CompletionRequest
from hepta.tokenizer import TextTokenizer


def _message_dict(message: ChatMessage, index: int) -> dict:
    content = message.content
    if isinstance(content, list):
        texts = []
        for j, part in enumerate(content):
            if part.type != "text":
                raise APIError(400, f"this model reads text only and cannot take {part.type} parts; send text "
                               "parts only, or serve a model that reads them",
                               param=f"messages[{index}].content[{j}]")
            texts.append(part.text)
        content = "".join(texts)
    role = "system" if message.role == "developer" else message.role  # OpenAI's newer name for system
    out = {"role": role, "content": content}
    if message.tool_calls:
        out["tool_calls"] = [call.model_dump() for call in message.tool_calls]
    if message.tool_call_id:
        out["tool_call_id"] = message.tool_call_id
    return out


def chat_prompt_ids(body: ChatCompletionRequest, tokenizer: TextTokenizer, context: str = "") -> list[int]:
    """Token ids of the rendered chat; `context` (found posts) joins the system message."""
    messages = [_message_dict(m, i) for i, m in enumerate(body.messages)]
    if context:
        if messages[0]["role"] == "system":
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{context}"}
        else:
            messages.insert(0, {"role": "system", "content": context})
    plain = tool_chat_messages(messages, body.tool_dicts(), body.tool_choice_value(), tool_role=tokenizer.has_tool_role)
    return tokenizer.encode(tokenizer.format_chat(plain, **_template_variables(body, tokenizer)))


def _template_variables(body: ChatCompletionRequest, tokenizer: TextTokenizer) -> dict:
    """`chat_template_kwargs` and `reasoning_effort` for a folder's chat template. hepta's own chat format has no
    variables: there reasoning_effort is ignored, as models without reasoning settings do, and template
    variables are refused."""
    if not hasattr(tokenizer, "chat_templates"):
        if body.chat_template_kwargs:
            raise APIError(400, "this model's chat format takes no template variables; leave chat_template_kwargs "
                           "out", param="chat_template_kwargs")
        return {}
    variables = dict(body.chat_template_kwargs or {})
    taken = sorted(variables.keys() & {"messages", "tools", "documents", "add_generation_prompt", "chat_template"})
    if taken:
        raise APIError(400, f"chat_template_kwargs cannot set {', '.join(taken)}; send those as the request's own "
                       "fields", param="chat_template_kwargs")
    if body.reasoning_effort is not None:
        variables.setdefault("reasoning_effort", body.reasoning_effort)
    return variables


def completion_prompts(body: CompletionRequest, tokenizer: TextTokenizer) -> list[list[int]]:
    """One id list per prompt: a string, a list of strings, a list of ids, or a list of id lists."""
    prompt = body.prompt
    if isinstance(prompt, str):
        prompts = [tokenizer.encode_prompt(prompt)]
    elif all(isinstance(p, str) for p in prompt):
        prompts = [tokenizer.encode_prompt(p) for p in prompt]
    elif all(isinstance(p, int) for p in prompt):
        prompts = [list(prompt)]
    else:
        prompts = [list(p) for p in prompt]
    for i, ids in enumerate(prompts):
        bad = [t for t in ids if not 0 <= t < tokenizer.vocab_size]
        if bad:
            raise APIError(400, f"token id {bad[0]} is outside the vocabulary (0..{tokenizer.vocab_size - 1})",
                           param="prompt")
        if not ids:
            raise APIError(400, "the prompt is empty; send some text or token ids", param="prompt" if len(prompts) == 1
                           else f"prompt[{i}]")
    return prompts


_longest_token_bytes: "weakref.WeakKeyDictionary[TextTokenizer, int]" = weakref.WeakKeyDictionary()


def longest_token_bytes(tokenizer: TextTokenizer) -> int:
    """The most UTF-8 bytes any one token's text spans (at least 1), from the vocabulary, once per tokenizer."""
    if tokenizer not in _longest_token_bytes:
        backend = getattr(tokenizer, "hf", None)
        vocab = backend.get_vocab(with_added_tokens=True) if backend is not None else {}
        _longest_token_bytes[tokenizer] = max((len(token.encode("utf-8")) for token in vocab), default=1) or 1
    return _longest_token_bytes[tokenizer]


def refuse_certainly_too_long(texts, tokenizer: TextTokenizer, max_len: int, param: str) -> None:
    """A 400 for a prompt whose text alone is sure to be longer than the context, before it is tokenized: no
    token spans more than `longest_token_bytes`, so N bytes are at least N / longest tokens. Tokenizing a
    50 MB prompt only to refuse it would take the server a minute."""
    size = sum(len(text.encode("utf-8")) for text in texts)
    at_least = size // longest_token_bytes(tokenizer)
    if at_least > max_len:
        raise APIError(400, f"the prompt is at least {at_least:,} tokens ({size:,} bytes of text), more than this "
                       f"model's context of {max_len:,} tokens; send a shorter prompt", param=param,
                       code="context_length_exceeded")


def chat_texts(body: ChatCompletionRequest):
    """Every text of a chat's messages (what its prompt's length is made of)."""
    for message in body.messages:
        if isinstance(message.content, str):
            yield message.content
        elif isinstance(message.content, list):
            yield from (part.text for part in message.content if part.type == "text" and part.text)
