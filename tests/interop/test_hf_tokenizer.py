"""HFTokenizer renders chats exactly as transformers' apply_chat_template does for the same folder.

Tokenizers are trained here with the `tokenizers` library, wrapped in PreTrainedTokenizerFast and
saved with save_pretrained; the templates are real ones from the Hub, written out literally.
"""

import json
from datetime import datetime

import jinja2
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

from hepta.errors import HeptaError
from hepta.interop.hf_tokenizer import HFTokenizer

transformers = pytest.importorskip("transformers")

# mistralai/Mixtral-8x7B-Instruct-v0.1
MIXTRAL = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

# meta-llama/Llama-2-7b-chat-hf (the classic one-line [INST] template)
LLAMA2 = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}"
    "{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"
)

# allenai/OLMoE-1B-7B-0924-Instruct (Tulu format)
OLMOE = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '<|system|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'user' %}"
    "{{ '<|user|>\n' + message['content'] + '\n' }}{% elif message['role'] == 'assistant' %}"
    "{% if not loop.last %}{{ '<|assistant|>\n'  + message['content'] + eos_token + '\n' }}"
    "{% else %}{{ '<|assistant|>\n'  + message['content'] + eos_token }}{% endif %}{% endif %}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}"
)

# Qwen/Qwen1.5-MoE-A2.7B-Chat (plain ChatML)
CHATML = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Qwen/Qwen2.5-7B-Instruct (ChatML with tools, tool calls and tool responses)
QWEN25 = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}
    {%- else %}
        {{- '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\\n<tool_call>\\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- message.content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""

# Llama-3.2 / SmolLM3 style: tojson with arguments, strftime_now, namespace, dict, loop controls,
# {% generation %}, reasoning fields and a caller-supplied variable; indented blocks test trim/lstrip.
FEATURES = """{%- set ns = namespace(system='', turns=0) %}
{%- set meta = dict(date=strftime_now('%Y'), mode=mode | default('plain')) %}
{{- bos_token }}<|system|>
{% if tools is not none %}
  Tools:
  {% for tool in tools %}
    {{ tool | tojson(indent=2, sort_keys=True) }}
  {% endfor %}
{% endif %}
year={{ meta.date }} mode={{ meta.mode }} docs={{ documents is none }}
{% for message in messages %}
  {% if message.role == 'system' %}{% set ns.system = message.content %}{% continue %}{% endif %}
  {% set ns.turns = ns.turns + 1 %}
  {% if ns.turns > 6 %}{% break %}{% endif %}
  <|{{ message.role }}|>{{ ns.system }}
  {% if message.role == 'assistant' %}
    {% generation %}{% if message.reasoning_content %}<think>{{ message.reasoning_content }}</think>{% endif %}{{ message.content }}{{ eos_token }}{% endgeneration %}
  {% else %}
    {{ message.content | tojson }}{% if message.name is defined %} name={{ message.name }}{% endif %}
  {% endif %}
{% endfor %}
{% if add_generation_prompt %}<|assistant|>{% endif %}
"""

SPECIALS = ["<s>", "</s>", "<unk>", "<|im_start|>", "<|im_end|>", "<|system|>", "<|user|>", "<|assistant|>"]
CORPUS = [
    "You are a helpful assistant. Answer briefly.",
    "What is a mixture of experts? A sparse layer that routes each token to a few experts.",
    "Hello there! How are you today?",
    "こんにちは、世界。専門家の混合モデルについて教えてください。",
    "Emoji check 🙂🚀✨ and more text.",
    "def weather(city): return the forecast for the city",
]

CHATS = [
    [{"role": "user", "content": "Hello there!"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is a mixture of experts?"}],
    [{"role": "system", "content": "Answer briefly."},
     {"role": "user", "content": "Hello there!"},
     {"role": "assistant", "content": "  Hi! How can I help?  "},
     {"role": "user", "content": "Explain MoE routing."}],
    [{"role": "user", "content": "こんにちは、世界。専門家の混合モデルについて教えてください。"},
     {"role": "assistant", "content": "もちろんです 🙂🚀 — \"quotes\" & <tags>\n\ttabs"},
     {"role": "user", "content": "ありがとう ✨"}],
]

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city — 東京 included",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]

TOOL_CHAT = [
    {"role": "user", "content": "東京の天気は？"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "東京"}}}]},
    {"role": "tool", "content": '{"temp": 21, "sky": "晴れ ☀️"}'},
    {"role": "assistant", "content": "晴れ、21度です。"},
    {"role": "user", "content": "Thanks!"},
]


def _backend(post_processor: bool = False) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer=trainer)
    if post_processor:  # Llama-style: encode(..., add_special_tokens=True) prepends <s>
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                           special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def _save(folder, template, post_processor=False, **save_kwargs):
    tok = transformers.PreTrainedTokenizerFast(tokenizer_object=_backend(post_processor), bos_token="<s>",
                                               eos_token="</s>", unk_token="<unk>")
    tok.chat_template = template
    tok.save_pretrained(folder, **save_kwargs)
    return tok


def _reference(folder, messages, **kwargs):
    return transformers.AutoTokenizer.from_pretrained(folder).apply_chat_template(messages, tokenize=False, **kwargs)


@pytest.mark.parametrize("template", [CHATML, OLMOE, QWEN25, FEATURES], ids=["chatml", "olmoe", "qwen25", "features"])
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_format_chat_matches_transformers(tmp_path, template, add_generation_prompt):
    tok = _save(tmp_path, template)
    ours = HFTokenizer(tmp_path)
    for messages in CHATS:
        want = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        assert want == _reference(tmp_path, messages, add_generation_prompt=add_generation_prompt)
        assert ours.format_chat(messages, add_generation_prompt=add_generation_prompt) == want


@pytest.mark.parametrize("template", [MIXTRAL, LLAMA2], ids=["mixtral", "llama2"])
def test_inst_templates_match_and_reject_bad_alternation(tmp_path, template):
    tok = _save(tmp_path, template)
    ours = HFTokenizer(tmp_path)
    for messages in CHATS:
        for add in (True, False):
            assert ours.format_chat(messages, add_generation_prompt=add) == \
                tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add)
    bad = [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}]
    with pytest.raises(jinja2.TemplateError) as theirs:
        tok.apply_chat_template(bad, tokenize=False)
    with pytest.raises(HeptaError, match="roles must alternate user/assistant") as err:
        ours.format_chat(bad)
    assert str(theirs.value) in str(err.value)


@pytest.mark.parametrize("template", [QWEN25, FEATURES], ids=["qwen25", "features"])
def test_tools_and_tool_calls_match(tmp_path, template):
    tok = _save(tmp_path, template)
    ours = HFTokenizer(tmp_path)
    for messages in (TOOL_CHAT, CHATS[1]):
        if template is FEATURES:
            messages = [m for m in messages if m.get("content") is not None]
        want = tok.apply_chat_template(messages, tools=TOOLS, tokenize=False, add_generation_prompt=True)
        assert ours.format_chat(messages, tools=TOOLS) == want
    assert "get_weather" in want


def test_extra_template_variables_and_reasoning_match(tmp_path):
    tok = _save(tmp_path, FEATURES)
    messages = [{"role": "user", "content": "2+2?", "name": None},  # None-valued keys are dropped, as OpenAI sends them
                {"role": "assistant", "content": "4", "reasoning": "add them"},
                {"role": "user", "content": "3+3?"}]
    want = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, mode="think",
                                   documents=[{"title": "t", "text": "x"}])
    got = HFTokenizer(tmp_path).format_chat(messages, mode="think", documents=[{"title": "t", "text": "x"}])
    assert got == want and "<think>add them</think>" in got and "mode=think" in got and "name=" not in got
    assert f"year={datetime.now().year}" in got


def test_legacy_config_template_and_named_templates(tmp_path):
    _save(tmp_path / "legacy", OLMOE, save_jinja_files=False)  # template kept inside tokenizer_config.json
    assert "chat_template" in json.loads((tmp_path / "legacy" / "tokenizer_config.json").read_text())
    assert HFTokenizer(tmp_path / "legacy").format_chat(CHATS[2]) == \
        _reference(tmp_path / "legacy", CHATS[2], add_generation_prompt=True)

    for save_jinja_files in (True, False):  # additional_chat_templates/ or a list in the config
        folder = tmp_path / f"named-{save_jinja_files}"
        _save(folder, {"default": CHATML, "tool_use": QWEN25}, save_jinja_files=save_jinja_files)
        ours = HFTokenizer(folder)
        assert sorted(ours.chat_templates) == ["default", "tool_use"]
        for tools in (None, TOOLS):
            assert ours.format_chat(CHATS[1], tools=tools) == \
                _reference(folder, CHATS[1], tools=tools, add_generation_prompt=True)
        assert ours.format_chat(CHATS[0], chat_template="tool_use") == \
            _reference(folder, CHATS[0], chat_template="tool_use", add_generation_prompt=True)


def test_processor_chat_template_json(tmp_path):
    _save(tmp_path, None)
    (tmp_path / "chat_template.json").write_text(json.dumps({"chat_template": CHATML}))
    want = transformers.PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), chat_template=CHATML)
    assert HFTokenizer(tmp_path).format_chat(CHATS[1]) == \
        want.apply_chat_template(CHATS[1], tokenize=False, add_generation_prompt=True)


@pytest.mark.parametrize("post_processor", [False, True])
def test_encode_decode_match(tmp_path, post_processor):
    _save(tmp_path, CHATML, post_processor=post_processor)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ours = HFTokenizer(tmp_path)
    assert ours.eos_id == theirs.eos_token_id and ours.bos_id == theirs.bos_token_id
    assert ours.vocab_size == len(theirs)
    for text in CORPUS + [ours.format_chat(CHATS[3]), "unseen wörds ⚡ 🧪", ""]:
        for special in (False, True):
            ids = ours.encode(text, add_special_tokens=special)
            assert ids == theirs.encode(text, add_special_tokens=special)
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
        assert ours.decode(ours.encode(text)) == text
    assert ours.encode_batch(CORPUS[:2]) == [theirs.encode(t, add_special_tokens=False) for t in CORPUS[:2]]
    assert (ours.encode("x", add_special_tokens=True)[0] == ours.bos_id) is post_processor


def test_no_chat_template_is_a_clear_error(tmp_path):
    _save(tmp_path, None)
    ours = HFTokenizer(tmp_path)
    assert ours.encode("Hello") and ours.eos_id is not None
    with pytest.raises(HeptaError, match="has no chat template"):
        ours.format_chat(CHATS[0])


def test_missing_or_corrupt_tokenizer_json(tmp_path):
    with pytest.raises(HeptaError, match="tokenizer.json is missing"):
        HFTokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(HeptaError, match="not a valid tokenizer file"):
        HFTokenizer(tmp_path)


def test_template_errors_are_hepta_errors(tmp_path):
    _save(tmp_path, "{% for m in messages %}{{ m.content }")  # unclosed expression
    with pytest.raises(HeptaError, match="does not compile"):
        HFTokenizer(tmp_path).format_chat(CHATS[0])
    _save(tmp_path, "{% set ns = namespace() %}{% set ns._x = 1 %}")  # sandboxed like transformers
    with pytest.raises(HeptaError, match="failed on these messages"):
        HFTokenizer(tmp_path).format_chat(CHATS[0])
    with pytest.raises(HeptaError, match="no messages"):
        HFTokenizer(tmp_path).format_chat([])
    _save(tmp_path, {"default": CHATML})
    with pytest.raises(HeptaError, match="no chat template named 'nope'"):
        HFTokenizer(tmp_path).format_chat(CHATS[0], chat_template="nope")
