"""Constrained decoding: `response_format` and tool calls enforced token by token.

Grammar engine: llguidance (the one vLLM, SGLang and llama.cpp ship). It compiles JSON Schema
and Lark grammars (with `%json` islands and lazy lexemes, which is how "free text until
`<tool_call>`, then arguments that validate" is written) in milliseconds, and computes the
allowed-token mask with an Earley parser over a derivative-based lexer walking the tokenizer's
token trie: tens of microseconds per token for small vocabularies, a few hundred for 128k ones,
with no per-vocabulary precompilation.

Use, per sequence and step (the engine does exactly this):
    mask_V = constraint.allowed_mask(V); logits_V[~mask_V] = -inf; id = sample(logits_V)
    constraint.accept(id); stop when id is an end id or constraint.is_finished
and for a batch, `allowed_masks(constraints, V)` fills all rows in one parallel llguidance call.

Dims: B batch, V vocabulary (the model's; may exceed the tokenizer's), W = ceil(V / 32) words.
"""

from __future__ import annotations

import copy
import json
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Sequence

import llguidance
import llguidance.numpy
import numpy as np
import torch

from hepta.errors import HeptaError
from hepta.infer.tools import TOOL_CALL_CLOSE, TOOL_CALL_OPEN, InvalidField, Tool, choose_tools
from hepta.tokenizer import TextTokenizer

# Compact JSON with the spaces json.dumps writes, and no other whitespace: a free choice of
# whitespace only lets a model pad forever, and the layout is the one models are trained on.
JSON_STYLE = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
ANY_OBJECT = {"type": "object"}

_llg_tokenizers: "weakref.WeakKeyDictionary[Any, llguidance.LLTokenizer]" = weakref.WeakKeyDictionary()


def llg_tokenizer(tokenizer: TextTokenizer) -> llguidance.LLTokenizer:
    """llguidance's view of a hepta `Tokenizer` or an `HFTokenizer` (built once per tokenizer object).

    Its end tokens are the tokenizer's stop ids, so a grammar allows them exactly when it accepts.
    Tokens the `tokenizers` file marks special (hepta's role, modality and reserved ids; a Hugging
    Face model's control tokens) are never matched by grammar text, so no grammar allows them.
    """
    cached = _llg_tokenizers.get(tokenizer)
    if cached is None:
        end_ids = sorted(tokenizer.stop_ids)
        if not end_ids:
            raise HeptaError("the tokenizer has no end-of-sequence token, so a constrained answer could never end; "
                             "set eos_token in tokenizer_config.json")
        backend = copy.copy(tokenizer.hf)  # padding or truncation settings must not reach the token table
        backend.no_padding()
        backend.no_truncation()
        cached = llguidance.LLTokenizer(backend.to_str(), n_vocab=tokenizer.vocab_size, eos_token=end_ids)
        _llg_tokenizers[tokenizer] = cached
    return cached


class Constraint:
    """The grammar state of one generated sequence."""

    def __init__(self, matcher: llguidance.LLMatcher, tokenizer_vocab: int):
        self.matcher = matcher
        self.tokenizer_vocab = tokenizer_vocab  # ids from here on (the model's padding rows) are never allowed

    def allowed_mask(self, vocab_size: int) -> torch.Tensor:
        """Bool [V]: the tokens the grammar allows next (end ids only where it accepts)."""
        return allowed_masks([self], vocab_size)[0]

    def accept(self, token_id: int) -> None:
        assert 0 <= token_id < self.tokenizer_vocab and self.matcher.consume_token(token_id), \
            f"token {token_id} was not allowed by the grammar: {self.matcher.get_error()}"

    @property
    def is_accepting(self) -> bool:
        """The text so far is a complete answer (an end id may come next)."""
        return self.matcher.is_accepting()

    @property
    def is_finished(self) -> bool:
        """The answer is complete and nothing can follow: end the sequence ("stop")."""
        return self.matcher.is_stopped()


@lru_cache(maxsize=1)
def _executor() -> llguidance.LLExecutor:
    return llguidance.LLExecutor()


def _tokenizer_bitmask(constraints: Sequence[Constraint | None]) -> tuple[np.ndarray, list[int], int]:
    """(int32 [B, ceil(n / 32)] bitmask of the constrained rows, their indices, n = tokenizer vocab).

    llguidance fills every constrained row in one call, in parallel threads, without the GIL; its
    rows are exactly as wide as the tokenizer, whatever the model's V.
    """
    rows = [(c.matcher, b) for b, c in enumerate(constraints) if c is not None]
    widths = {c.tokenizer_vocab for c in constraints if c is not None}
    assert len(widths) <= 1, "one batch, one tokenizer"
    tokenizer_vocab = widths.pop() if widths else 0
    bitmask = np.zeros((len(constraints), (tokenizer_vocab + 31) // 32), dtype=np.int32)
    if rows:
        llguidance.numpy.fill_next_token_bitmask_par(_executor(), rows, bitmask)
    return bitmask, [b for _, b in rows], tokenizer_vocab


def allowed_masks(constraints: Sequence[Constraint | None], vocab_size: int) -> torch.Tensor:
    """Bool [B, V] allowed-token masks of a batch (on the CPU); a None row (unconstrained) is all True."""
    bitmask, constrained, tokenizer_vocab = _tokenizer_bitmask(constraints)
    if not constrained:
        return torch.ones((len(constraints), vocab_size), dtype=torch.bool)
    n = min(vocab_size, tokenizer_vocab)
    bits_Bn = np.unpackbits(bitmask.view(np.uint8), axis=1, count=n, bitorder="little").view(bool)
    if n == vocab_size:
        mask_BV = bits_Bn
    else:  # the model's padding rows past the tokenizer stay False
        mask_BV = np.zeros((len(constraints), vocab_size), dtype=bool)
        mask_BV[:, :n] = bits_Bn
    if len(constrained) < len(constraints):
        mask_BV[[b for b, c in enumerate(constraints) if c is None]] = True
    return torch.from_numpy(mask_BV)


# --- grammars -----------------------------------------------------------------------------------


def _styled(schema: dict) -> dict:
    # the schema's own llguidance options (e.g. "coerce_one_of") are kept; the layout is ours
    options = schema.get("x-guidance")
    return {**schema, "x-guidance": {**(options if isinstance(options, dict) else {}), **JSON_STYLE}}


def _lark_json(schema: dict) -> str:
    # each %json island keeps its own root, so "$ref": "#/$defs/..." in a schema still resolves
    return "%json " + json.dumps(_styled(schema), ensure_ascii=False)


def _lark_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _response_schema(response_format: Any) -> tuple[dict, str] | None:
    """(JSON Schema, its param name) that `response_format` asks for; None for free text."""
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise InvalidField("response_format", "must be an object like {'type': 'json_object'}")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ANY_OBJECT, "response_format"
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidField("response_format.json_schema", "must be an object with 'name' and 'schema'")
        if not isinstance(spec.get("name"), str) or not spec["name"]:
            raise InvalidField("response_format.json_schema.name", "is required: a name for the schema")
        schema = spec.get("schema", {})
        if not isinstance(schema, dict):
            raise InvalidField("response_format.json_schema.schema", "must be a JSON Schema object")
        return schema, "response_format.json_schema.schema"
    raise InvalidField("response_format.type", f"{kind!r} is not one of 'text', 'json_object', 'json_schema'")


def _marker(tokenizer: TextTokenizer, text: str) -> str:
    """Lark for a fixed tag: the token itself where the vocabulary holds it as an added token
    (Qwen's <tool_call>), which the model writes as one id, else the string, written in pieces."""
    token_id = tokenizer.hf.token_to_id(text)
    if token_id is not None and token_id in tokenizer.hf.get_added_tokens_decoder():
        return text
    return _lark_str(text)


def _calls_lark(tokenizer: TextTokenizer, tools: list[Tool], start: str, parallel: bool) -> str:
    """Lark for tool calls in tools.format_tool_call's exact layout, so parse_tool_calls reads every
    call back. `start` combines `calls` (whole calls) or `OPEN body more*` (calls after a free
    text) with what may be written instead; `parallel` allows more than one call."""
    open_, close = _marker(tokenizer, TOOL_CALL_OPEN), _marker(tokenizer, TOOL_CALL_CLOSE)
    nl = _lark_str("\n")
    more = " more*" if parallel else ""
    rules = ["%llguidance {}", f"start: {start.replace('OPEN', open_).replace(' more*', more)}",
             f"calls: {open_} body{more}",
             f"body: {nl} ({' | '.join(f'call_{i}' for i in range(len(tools)))}) {nl} {close}"]
    if parallel:
        rules.append(f"more: {nl} {open_} body")
    for i, tool in enumerate(tools):
        head = '{"name": ' + json.dumps(tool.name) + ', "arguments": '
        rules.append(f"call_{i}: {_lark_str(head)} args_{i} \"}}\"")
        rules.append(f"args_{i}: {_lark_json(tool.parameters)}")
    return "\n".join(rules) + "\n"


def _auto_calls_lark(tokenizer: TextTokenizer, tools: list[Tool], parallel: bool) -> str:
    """Free text, or free text then calls: once the opening tag is written only calls may follow,
    so a call can never be started and abandoned."""
    if _marker(tokenizer, TOOL_CALL_OPEN) == TOOL_CALL_OPEN:
        # free text cannot hold the tag's token, so the text ends exactly where the model writes it
        return _calls_lark(tokenizer, tools, "TEXT | TEXT OPEN body more*", parallel) + "TEXT: /(?s:.*)/\n"
    # the tag is spelled in several tokens: the lazy lexeme `lead` ends at its first occurrence
    lead = "/(?s:.*)" + TOOL_CALL_OPEN.replace("/", "\\/") + "/"
    return (_calls_lark(tokenizer, tools, "TEXT | lead body more*", parallel)
            + f"TEXT: /(?s:.*)/\nlead[lazy]: {lead}\n")


def _check_schema(schema: dict, param: str, llg: llguidance.LLTokenizer) -> None:
    grammar = llguidance.LLMatcher.grammar_from_json_schema(_styled(schema))
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, llg)
    if is_error:
        raise InvalidField(param, f"cannot be enforced: {messages[0]}; fix the schema or drop the part it names")


@dataclass
class ConstraintSpec:
    """A request's grammar, compiled once; `new()` gives each of its n sequences its own state."""

    prototype: llguidance.LLMatcher = field(repr=False)
    tokenizer_vocab: int
    grammar: str = field(default="", repr=False)  # what `from_grammar` rebuilds the spec from in another process

    @classmethod
    def for_request(cls, tokenizer: TextTokenizer, response_format: Any = None, tools: Sequence[dict] | None = None,
                    tool_choice: Any = None, parallel_tool_calls: bool = True) -> "ConstraintSpec | None":
        """The constraint of an OpenAI chat request; None when its output is free text.

        tool_choice "required": only calls (one, or several when parallel_tool_calls), each validating
        against its tool's parameters; named: exactly one call of that function (a response_format
        has nothing to shape then, as with OpenAI, and is ignored); "auto": free
        text (or the response_format's JSON) or calls, once "<tool_call>" is written the rest must be
        calls; "none": the response_format alone. Invalid or unsupported schemas raise InvalidField
        naming the field.
        """
        schema = _response_schema(response_format)
        chosen, mode = choose_tools(tools, tool_choice)
        llg = llg_tokenizer(tokenizer)
        parallel = parallel_tool_calls and mode != "named"
        if schema is not None and mode not in ("required", "named"):
            _check_schema(schema[0], schema[1], llg)
        for tool in chosen if mode != "none" else []:
            _check_schema(tool.parameters, f"{tool.param}.parameters", llg)
        if mode in ("required", "named"):
            grammar = llguidance.LLMatcher.grammar_from_lark(_calls_lark(tokenizer, chosen, "calls", parallel))
        elif mode == "auto" and schema is not None:
            grammar = llguidance.LLMatcher.grammar_from_lark(
                _calls_lark(tokenizer, chosen, "answer | calls", parallel) + f"answer: {_lark_json(schema[0])}\n")
        elif mode == "auto":
            grammar = llguidance.LLMatcher.grammar_from_lark(_auto_calls_lark(tokenizer, chosen, parallel))
        elif schema is not None:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(_styled(schema[0]))
        else:
            return None
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, llg)
        if is_error:
            raise InvalidField("tools", f"cannot be enforced together: {messages[0]}")
        return cls.from_grammar(tokenizer, grammar)

    @classmethod
    def from_grammar(cls, tokenizer: TextTokenizer, grammar: str) -> "ConstraintSpec":
        """The spec of a grammar already validated (the engine process gets the grammar, not the matcher)."""
        llg = llg_tokenizer(tokenizer)
        prototype = llguidance.LLMatcher(llg, grammar, log_level=0)
        assert not prototype.is_error(), prototype.get_error()
        return cls(prototype, llg.vocab_size, grammar)

    def new(self) -> Constraint:
        # a copy of the fresh matcher: the grammar is compiled once per request, not per sequence
        return Constraint(self.prototype.deep_copy(), self.tokenizer_vocab)
