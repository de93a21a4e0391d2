"""Tool calling: the prompt, multi-turn rendering, parsing, and calls from a random model that validate."""

import json

import jsonschema_rs
import pytest
import torch

from hepta.infer.constrain import ConstraintSpec
from hepta.infer.sampling import SamplingParams, sample_next
from hepta.infer.tools import (TOOL_CALL_OPEN, InvalidField, ToolCallStream, choose_tools, format_tool_call,
                               parse_tool_calls,
                               tool_chat_messages, tools_system_prompt)
from hepta.interop.hf_tokenizer import HFTokenizer
from hepta.tokenizer import Tokenizer
from helpers import engine_generate
from test_constrain import (MAX_TOKENS, SEEDS, chat_prompt, corpus_texts, hf_tokenizer, json_schema_format,  # noqa: F401
                            model, one_thread, structure_ids, tokenizer)

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city.",
    "parameters": {"type": "object",
                   "properties": {"city": {"type": "string", "maxLength": 10}, "unit": {"enum": ["c", "f"]}},
                   "required": ["city", "unit"], "additionalProperties": False}}}
ADD = {"type": "function", "function": {
    "name": "add", "description": "Add two small integers.",
    "parameters": {"type": "object",
                   "properties": {"x": {"type": "integer", "minimum": -50, "maximum": 50},
                                  "y": {"type": "integer", "minimum": -50, "maximum": 50}},
                   "required": ["x", "y"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {"name": "clock"}}  # no parameters: arguments are {}
TOOLS = [WEATHER, ADD, CLOCK]
SCHEMAS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object", "maxProperties": 0})
           for t in TOOLS}

# A strict template (as Mixtral's): optional system, then user/assistant strictly alternating.
STRICT = ("{% for m in messages %}{% if m['role'] == 'system' %}{{ '[SYS]' + m['content'] + '[/SYS]' }}"
          "{% elif (m['role'] == 'user') != (loop.index0 % 2 == (1 if messages[0]['role'] == 'system' else 0)) %}"
          "{{ raise_exception('roles must alternate user/assistant') }}"
          "{% elif m['role'] == 'user' %}{{ '[INST]' + m['content'] + '[/INST]' }}"
          "{% else %}{{ m['content'] + eos_token }}{% endif %}{% endfor %}")

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Weather in Paris and 2+3?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather",
                                                          "arguments": '{"city": "Paris", "unit": "c"}'}},
        {"id": "call_2", "type": "function", "function": {"name": "add", "arguments": '{"x": 2, "y": 3}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18 C, sunny"},
    {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "5"}]},
    {"role": "assistant", "content": "Sunny, 18 C; 2+3 = 5."},
    {"role": "user", "content": "Thanks!"},
]


def assert_valid_calls(calls: list[dict], allowed_names=None) -> None:
    assert calls
    for call in calls:
        assert call["type"] == "function" and call["id"].startswith("call_") and len(call["id"]) == 29
        name = call["function"]["name"]
        assert allowed_names is None or name in allowed_names
        arguments = json.loads(call["function"]["arguments"])
        jsonschema_rs.validator_for(SCHEMAS[name]).validate(arguments)


# --- request checks ------------------------------------------------------------------------------


@pytest.mark.parametrize("tools, tool_choice, param", [
    ("get_weather", None, "tools"),
    ([{"type": "function"}], None, "tools[0]"),
    ([WEATHER, {"type": "function", "function": {"name": "bad name!"}}], None, "tools[1].function.name"),
    ([WEATHER, WEATHER], None, "tools[1].function.name"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "array"}}}], None,
     "tools[0].function.parameters"),
    ([WEATHER], "sometimes", "tool_choice"),
    (None, "required", "tool_choice"),
    ([WEATHER], {"type": "function", "function": {"name": "add"}}, "tool_choice.function.name"),
])
def test_bad_tools_or_tool_choice_name_the_field(tools, tool_choice, param):
    with pytest.raises(InvalidField) as error:
        choose_tools(tools, tool_choice)
    assert error.value.param == param and str(error.value).startswith(param + ": ")


def test_unenforceable_tool_parameters_name_the_tool(tokenizer):
    broken = {"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"when": {"type": "string", "format": "moon-phase"}}}}}
    with pytest.raises(InvalidField) as error:
        ConstraintSpec.for_request(tokenizer, None, [WEATHER, broken], "auto")
    assert error.value.param == "tools[1].function.parameters" and "moon-phase" in str(error.value)


def test_tool_choice_defaults_follow_openai():
    assert choose_tools(None, None)[1] == "none"
    assert choose_tools(TOOLS, None)[1] == "auto"
    chosen, mode = choose_tools(TOOLS, {"type": "function", "function": {"name": "add"}})
    assert mode == "named" and [t.name for t in chosen] == ["add"]


# --- prompt and rendering ----------------------------------------------------------------------------


def test_system_prompt_lists_the_tools_and_the_call_format():
    prompt = tools_system_prompt(TOOLS, "auto")
    for tool in TOOLS:
        assert json.dumps(tool["function"]["name"]) in prompt
    assert '"maxLength": 10' in prompt and TOOL_CALL_OPEN in prompt and "plain text" in prompt
    assert "must call one or more" in tools_system_prompt(TOOLS, "required")
    named = tools_system_prompt(TOOLS, {"type": "function", "function": {"name": "add"}})
    assert "must call the function add" in named and "get_weather" not in named
    assert tools_system_prompt(TOOLS, "none") == ""


def test_multi_turn_tool_conversation_renders_for_any_template(tokenizer, hf_tokenizer, tmp_path):
    plain = tool_chat_messages(CONVERSATION, TOOLS, "auto")
    assert [m["role"] for m in plain] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert plain[0]["content"].startswith("Be brief.\n\n# Tools")
    assert plain[2]["content"] == (format_tool_call("get_weather", {"city": "Paris", "unit": "c"}) + "\n"
                                   + format_tool_call("add", {"x": 2, "y": 3}))
    assert plain[3]["content"] == ("<tool_response>\n18 C, sunny\n</tool_response>\n"
                                   "<tool_response>\n5\n</tool_response>")
    assert all(set(m) == {"role", "content"} for m in plain)
    # hepta's template has a tool role; a strict alternating template and ChatML take the user turn
    hepta_text = tokenizer.format_chat(tool_chat_messages(CONVERSATION, TOOLS, "auto", tool_role=True))
    assert "<|tool|><tool_response>\n18 C, sunny\n</tool_response><|end|><|tool|>" in hepta_text
    assert "<tool_response>\n5\n</tool_response>" in hf_tokenizer.format_chat(plain)
    strict_folder = tmp_path / "strict"
    strict_folder.mkdir()
    (strict_folder / "tokenizer.json").write_text((hf_tokenizer.folder / "tokenizer.json").read_text())
    (strict_folder / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>",
                                                                     "chat_template": STRICT}))
    strict = HFTokenizer(strict_folder)
    assert "[INST]<tool_response>" in strict.format_chat(plain)
    with pytest.raises(Exception, match="alternate"):  # the same messages with a tool role do not render there
        strict.format_chat(tool_chat_messages(CONVERSATION, TOOLS, "auto", tool_role=True))


def test_a_call_the_model_made_reads_back_into_the_same_call():
    plain = tool_chat_messages(CONVERSATION[:3], TOOLS, "auto")
    content, calls = parse_tool_calls(plain[2]["content"], TOOLS)
    assert content is None
    assert [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("get_weather", {"city": "Paris", "unit": "c"}), ("add", {"x": 2, "y": 3})]
    assert len({c["id"] for c in calls}) == 2


def test_bad_tool_call_arguments_in_history_name_the_message():
    history = [{"role": "assistant", "tool_calls": [{"type": "function",
                                                     "function": {"name": "add", "arguments": "{x: 1"}}]}]
    with pytest.raises(InvalidField) as error:
        tool_chat_messages(history, TOOLS)
    assert error.value.param == "messages[0].tool_calls[0].function.arguments"


# --- parsing -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, content, names", [
    ("It is sunny.", "It is sunny.", []),
    ("", None, []),
    ('Let me check.\n<tool_call>\n{"name": "add", "arguments": {"x": 1, "y": 2}}\n</tool_call>',
     "Let me check.", ["add"]),
    ('<tool_call>{"name": "clock", "arguments": {}}</tool_call>\n<tool_call>\n'
     '{"name": "get_weather", "arguments": {"city": "a</tool_call>b", "unit": "f"}}\n</tool_call>',
     None, ["clock", "get_weather"]),
    ('<tool_call>\n{"name": "launch", "arguments": {}}\n</tool_call>',  # not a tool of this request
     '<tool_call>\n{"name": "launch", "arguments": {}}\n</tool_call>', []),
    ('<tool_call>\n{"name": "add", "arguments": {"x": 1,', '<tool_call>\n{"name": "add", "arguments": {"x": 1,',
     []),  # cut off by max_tokens: left as text
])
def test_parse_tool_calls(text, content, names):
    got_content, calls = parse_tool_calls(text, TOOLS)
    assert got_content == content
    assert [c["function"]["name"] for c in calls] == names
    if names:
        assert json.loads(calls[-1]["function"]["arguments"]) == json.loads(
            text[text.rindex("{\"name\""):].split("\n</tool_call>")[0].removesuffix("</tool_call>"))["arguments"]


# --- generation from a random model ------------------------------------------------------------


def generate(model, tokenizer, spec, seed, logit_bias=None, max_tokens=MAX_TOKENS):
    prompt = tokenizer.format_chat(tool_chat_messages([{"role": "user", "content": "Weather in Paris?"}], TOOLS,
                                                      "auto", tool_role=isinstance(tokenizer, Tokenizer)))
    return engine_generate(model, tokenizer, prompt, spec, max_tokens,
                           SamplingParams(temperature=1.0, seed=seed), logit_bias)


def test_required_tool_calls_validate(model, tokenizer):
    spec = ConstraintSpec.for_request(tokenizer, None, TOOLS, "required")
    names = set()
    for seed in SEEDS:
        out = generate(model, tokenizer, spec, seed)
        assert out.finish_reason == "stop", out.text
        content, calls = parse_tool_calls(out.text, TOOLS)
        assert content is None
        assert_valid_calls(calls)
        names |= {c["function"]["name"] for c in calls}
    assert len(names) > 1  # the model, not the grammar, picks the tool


@pytest.mark.parametrize("tool_choice, parallel_tool_calls, names", [
    ({"type": "function", "function": {"name": "get_weather"}}, True, {"get_weather"}),
    ("required", False, None),
])
def test_named_tool_choice_or_no_parallel_calls_make_exactly_one_call(model, tokenizer, tool_choice,
                                                                      parallel_tool_calls, names):
    spec = ConstraintSpec.for_request(tokenizer, {"type": "json_object"}, TOOLS, tool_choice,
                                      parallel_tool_calls=parallel_tool_calls)
    for seed in SEEDS:
        out = generate(model, tokenizer, spec, seed)
        assert out.finish_reason == "stop"
        content, calls = parse_tool_calls(out.text, TOOLS)
        assert content is None and len(calls) == 1
        assert_valid_calls(calls, names)


def test_a_tool_without_parameters_gets_empty_arguments(model, tokenizer):
    spec = ConstraintSpec.for_request(tokenizer, None, TOOLS, {"type": "function", "function": {"name": "clock"}})
    out = generate(model, tokenizer, spec, seed=0)
    _, calls = parse_tool_calls(out.text, TOOLS)
    assert calls and all(c["function"]["arguments"] == "{}" for c in calls)


def test_auto_writes_free_text_when_no_call_is_started(model, tokenizer):
    spec = ConstraintSpec.for_request(tokenizer, None, TOOLS, "auto")
    free_seeds = 0
    for seed in SEEDS:
        out = generate(model, tokenizer, spec, seed, max_tokens=60)
        if TOOL_CALL_OPEN in out.text:
            continue
        free_seeds += 1
        assert parse_tool_calls(out.text, TOOLS) == ((out.text or None), [])
    assert free_seeds > 0


def test_auto_call_started_by_a_single_marker_token_validates(model, hf_tokenizer):
    # Qwen-style vocabularies hold <tool_call> as one token: biasing it makes the model open a call
    marker = hf_tokenizer.hf.token_to_id(TOOL_CALL_OPEN)
    spec = ConstraintSpec.for_request(hf_tokenizer, None, TOOLS, "auto", parallel_tool_calls=False)
    for seed in SEEDS:
        out = generate(model, hf_tokenizer, spec, seed, logit_bias={marker: 100.0})
        assert out.token_ids[0] == marker and out.finish_reason == "stop"
        content, calls = parse_tool_calls(out.text, TOOLS)
        assert content is None and len(calls) == 1
        assert_valid_calls(calls)


def test_auto_call_started_mid_text_is_forced_to_validate(model, tokenizer):
    # hepta's BPE spells <tool_call> in several pieces: after a few free tokens, bias them in order;
    # from the last piece on, the grammar alone keeps the call valid
    spec = ConstraintSpec.for_request(tokenizer, None, TOOLS, "auto", parallel_tool_calls=False)
    marker = tokenizer.encode(TOOL_CALL_OPEN)
    assert len(marker) > 1
    prompt_ids = tokenizer.encode(chat_prompt(tokenizer, "Weather in Paris?"))
    vocab_size = model.config.vocab_size
    end_ids = sorted(tokenizer.stop_ids)
    for seed in SEEDS:
        generator = torch.Generator().manual_seed(seed)
        constraint, ids, marker_start = spec.new(), [], None
        cache = model.new_slot_cache(num_slots=1, max_len=len(prompt_ids) + MAX_TOKENS)
        with torch.no_grad():
            cache.set_window(0, 1)
            logits = model(torch.tensor([prompt_ids]), cache=cache)[0, -1]
            for step in range(MAX_TOKENS):
                mask = constraint.allowed_mask(vocab_size)
                assert not mask[structure_ids(tokenizer)].any()
                # start once "<" may follow (not inside a multi-byte character the text has begun)
                if marker_start is None and step >= 3 and mask[marker[0]]:
                    marker_start = step
                if marker_start is not None and step - marker_start < len(marker):
                    logits = logits.clone()
                    logits[marker[step - marker_start]] += 100.0
                next_id = int(sample_next(logits.masked_fill(~mask, float("-inf"))[None],
                                          SamplingParams(temperature=1.0), generator)[0])
                if next_id in end_ids:
                    break
                constraint.accept(next_id)
                ids.append(next_id)
                if constraint.is_finished:
                    break
                cache.set_window(0, 1)
                logits = model(torch.tensor([[next_id]]), cache=cache)[0, -1]
        assert constraint.is_finished  # one whole call, then nothing may follow
        content, calls = parse_tool_calls(tokenizer.decode(ids), TOOLS)
        assert content == (tokenizer.decode(ids[:marker_start]).strip() or None)
        assert_valid_calls(calls)
        assert len(calls) == 1


def test_auto_with_a_response_format_answers_json_or_calls(model, tokenizer):
    schema = {"type": "object", "properties": {"answer": {"type": "string", "maxLength": 8}},
              "required": ["answer"], "additionalProperties": False}
    spec = ConstraintSpec.for_request(tokenizer, json_schema_format(schema), TOOLS, "auto", parallel_tool_calls=False)
    kinds = set()
    for seed in range(8):
        out = generate(model, tokenizer, spec, seed)
        content, calls = parse_tool_calls(out.text, TOOLS)
        if calls:
            assert content is None
            assert_valid_calls(calls)
            kinds.add("calls")
        else:
            jsonschema_rs.validator_for(schema).validate(json.loads(out.text))
            kinds.add("json")
    assert kinds == {"calls", "json"}


def test_tool_choice_none_leaves_only_the_response_format(tokenizer):
    assert ConstraintSpec.for_request(tokenizer, None, TOOLS, "none") is None
    spec = ConstraintSpec.for_request(tokenizer, {"type": "json_object"}, TOOLS, "none")
    mask = spec.new().allowed_mask(tokenizer.vocab_size)
    assert mask.sum() == 1 and mask[tokenizer.encode("{")[0]]


# --- streaming -----------------------------------------------------------------------------------


def stream(text: str, chunk_sizes) -> tuple[str, list[dict], ToolCallStream]:
    """Feed `text` in chunks; return (content, tool calls assembled from the deltas as a client does)."""
    streamer, deltas, position = ToolCallStream(TOOLS), [], 0
    for size in chunk_sizes:
        deltas += streamer.push(text[position:position + size])
        position += size
    deltas += streamer.push(text[position:]) + streamer.finish()
    content, calls = "", []
    for delta in deltas:
        content += delta.get("content", "")
        for piece in delta.get("tool_calls", []):
            if piece["index"] == len(calls):
                calls.append({"id": piece["id"], "name": piece["function"]["name"], "arguments": ""})
            calls[piece["index"]]["arguments"] += piece["function"]["arguments"]
    return content, calls, streamer


STREAMED = ('Let me look that up.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "a}\\n</tool_call>", '
            '"unit": "c"}}\n</tool_call>\n<tool_call>\n{"name": "add", "arguments": {"x": 1, "y": -2}}\n</tool_call>')


@pytest.mark.parametrize("chunk_sizes", [[len(STREAMED)], [1] * len(STREAMED), [3, 7, 11, 2, 40, 5] * 6])
def test_streamed_tool_calls_add_up_to_the_parsed_ones(chunk_sizes):
    content, calls, streamer = stream(STREAMED, chunk_sizes)
    expected_content, expected_calls = parse_tool_calls(STREAMED, TOOLS)
    assert content.strip() == expected_content
    assert [(c["name"], c["arguments"]) for c in calls] == [
        (c["function"]["name"], c["function"]["arguments"]) for c in expected_calls]
    assert [c["id"] for c in calls] == [c["id"] for c in streamer.tool_calls]
    assert [c["function"]["arguments"] for c in streamer.tool_calls] == [c["arguments"] for c in calls]


@pytest.mark.parametrize("text", ["plain text with a < sign and <tool", "see <tool_call> in prose, not a call",
                                  '<tool_call>\n{"name": "launch", "arguments": {}}\n</tool_call>'])
def test_streamed_text_that_is_not_a_call_stays_content(text):
    for chunk_sizes in ([len(text)], [1] * len(text)):
        content, calls, _ = stream(text, chunk_sizes)
        assert content == text and calls == []


def test_streaming_a_random_models_calls_token_by_token(model, tokenizer):
    spec = ConstraintSpec.for_request(tokenizer, None, TOOLS, "required")
    out = generate(model, tokenizer, spec, seed=1)
    streamer, deltas, text = ToolCallStream(TOOLS), [], ""
    for i in range(1, len(out.token_ids) + 1):  # deltas as the server decodes them
        now = tokenizer.decode(out.token_ids[:i])
        if not now.endswith("\ufffd"):
            deltas += streamer.push(now[len(text):])
            text = now
    deltas += streamer.finish()
    assert not any(d.get("content", "").strip() for d in deltas)
    _, calls = parse_tool_calls(out.text, TOOLS)
    assert [c["function"]["arguments"] for c in streamer.tool_calls] == [c["function"]["arguments"] for c in calls]
    assert_valid_calls(streamer.tool_calls)
