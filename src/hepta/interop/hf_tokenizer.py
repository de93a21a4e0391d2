"""The tokenizer and chat template of a Hugging Face model folder.

`HFTokenizer` reads tokenizer.json (with the `tokenizers` library), tokenizer_config.json and the
chat template files the way transformers 5 does, and renders a message list to exactly the text
`AutoTokenizer.from_pretrained(folder).apply_chat_template(messages, tokenize=False, ...)` gives.
Chat templates come from the Hub, so they are untrusted code: they run in jinja2's immutable
sandbox, set up as in transformers (see `_environment`). transformers itself is not imported.

Template sources, highest priority first (transformers' `_from_pretrained` order):
  chat_template.jinja ("default") and additional_chat_templates/<name>.jinja,
  tokenizer_config.json "chat_template" (a string, or a list of {"name", "template"}),
  chat_template.json {"chat_template": ...} (the legacy processor file).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer

from hepta.errors import HeptaError

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"  # legacy, read only when the config lacks added_tokens_decoder
TEMPLATE_FILE = "chat_template.jinja"
TEMPLATE_DIR = "additional_chat_templates"
LEGACY_TEMPLATE_JSON = "chat_template.json"

# transformers' PreTrainedTokenizerBase.SPECIAL_TOKENS_ATTRIBUTES: every one that is set becomes a template variable.
NAMED_SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# Names a message's reasoning arrives under; templates read the first (transformers' _REASONING_FIELDS).
REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")


# --- the jinja environment --------------------------------------------------------------------
# Mirrors transformers/utils/chat_template_utils.py::_cached_compile_jinja_template (5.x). Rendering
# must match it byte for byte, so every setting, filter and global there is repeated here.


class _TemplateRaised(jinja2.exceptions.TemplateError):
    """`raise_exception(...)` called by the template: the message is for the user as is."""


def _raise_exception(message):
    raise _TemplateRaised(message)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Replaces jinja's own tojson, which HTML-escapes and lacks these options.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format):
    return datetime.now().strftime(format)


class _TemplateDict:
    # `dict(...)` without exposing the dict type itself to attribute tricks.
    def __call__(self, *args, **kwargs):
        return dict(*args, **kwargs)

    def fromkeys(self, *args, **kwargs):
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    # Namespaces refuse underscore names so a template cannot reach CPython internals through them.
    def __init__(*args, **kwargs):
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name, value):
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name):
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"chat templates cannot set underscore attribute {name!r} on a namespace")


class _Generation(jinja2.ext.Extension):
    # `{% generation %}...{% endgeneration %}` marks assistant text for training masks; rendering keeps the body.
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


@lru_cache
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[_Generation, jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now,
                       dict=_TemplateDict(), namespace=_TemplateNamespace)
    return env


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    return _environment().from_string(template)


# --- reading the folder -------------------------------------------------------------------------


def _token_text(value) -> str | None:
    # tokenizer_config.json stores a token as a string or as a serialised AddedToken {"content": ...}.
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HeptaError(f"{path} is not valid JSON ({e}); restore it from the model's original files") from e


def _special_tokens(config: dict, folder: Path) -> dict[str, str]:
    """The token variables transformers gives every template (its `special_tokens_map`)."""
    entries = dict(config)
    legacy_map = folder / SPECIAL_TOKENS_MAP_FILE
    if "added_tokens_decoder" not in config and legacy_map.is_file():
        entries.update(_read_json(legacy_map))  # transformers lets the legacy file override the config here
    tokens = {}
    for key, value in entries.items():
        # Besides the named ones, any other "*_token" string is a model-specific special token (image_token, ...).
        if key in NAMED_SPECIAL_TOKENS or (key.endswith("_token") and isinstance(value, (str, dict))):
            if (text := _token_text(value)) is not None:
                tokens[key] = text
    extra = entries.get("extra_special_tokens")
    if isinstance(extra, dict):
        tokens.update({k: t for k, v in extra.items() if (t := _token_text(v)) is not None})
    return tokens


def _chat_templates(config: dict, folder: Path) -> dict[str, str]:
    templates = {}
    if (folder / TEMPLATE_FILE).is_file():
        templates["default"] = (folder / TEMPLATE_FILE).read_text(encoding="utf-8")
    if (folder / TEMPLATE_DIR).is_dir():
        for path in sorted((folder / TEMPLATE_DIR).glob("*.jinja")):
            templates[path.name.removesuffix(".jinja")] = path.read_text(encoding="utf-8")
    if templates:
        return templates
    source = config.get("chat_template")
    if source is None and (folder / LEGACY_TEMPLATE_JSON).is_file():
        source = _read_json(folder / LEGACY_TEMPLATE_JSON).get("chat_template")
    if isinstance(source, str):
        return {"default": source}
    if isinstance(source, list):
        return {entry["name"]: entry["template"] for entry in source}
    return {}


def _template_data(value: Any) -> Any:
    # A fresh copy of plain containers, so a template never sees (or touches) the caller's objects.
    if isinstance(value, dict):
        return {k: _template_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_template_data(v) for v in value)
    return value


def _normalize_message(message: dict) -> dict:
    # As transformers: drop None-valued keys (OpenAI clients send content=None), then alias reasoning fields.
    if not isinstance(message, dict):
        raise HeptaError(f"chat message {message!r} is not a dict; pass messages as {{'role': ..., 'content': ...}}")
    message = {k: _template_data(v) for k, v in message.items() if v is not None}
    reasoning = next((message[k] for k in REASONING_FIELDS if message.get(k) is not None), None)
    if reasoning is not None:
        message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
    return message


class HFTokenizer:
    """Tokenizer, special tokens and chat templates of one Hugging Face model folder; a `TextTokenizer`."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        path = self.folder / TOKENIZER_FILE
        if not path.is_file():
            raise HeptaError(f"{path} is missing; copy tokenizer.json from the model's Hugging Face repository")
        try:
            self.hf = Tokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception on bad JSON
            raise HeptaError(f"{path} is not a valid tokenizer file ({e}); download it again") from e
        config_path = self.folder / CONFIG_FILE
        config = _read_json(config_path) if config_path.is_file() else {}
        self.special_tokens = _special_tokens(config, self.folder)
        self.chat_templates = _chat_templates(config, self.folder)
        # add_bos_token / add_eos_token are ignored: with a tokenizer.json, transformers drops them too and
        # the file's post-processor decides what encode(..., add_special_tokens=True) adds.
        self.clean_up_tokenization_spaces = bool(config.get("clean_up_tokenization_spaces", False))

    # --- ids ------------------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    def _token_id(self, name: str) -> int | None:
        token = self.special_tokens.get(name)
        return None if token is None else self.hf.token_to_id(token)

    @property
    def bos_id(self) -> int | None:
        return self._token_id("bos_token")

    @property
    def eos_id(self) -> int:
        eos = self._token_id("eos_token")
        if eos is None:
            raise HeptaError(f"{self.folder / CONFIG_FILE} names no eos_token found in the vocabulary; "
                             "set \"eos_token\" there to the model's end-of-sequence token")
        return eos

    @property
    def stop_ids(self) -> set[int]:
        """Ids that end a generation: eos_token plus generation_config.json's eos_token_id(s)."""
        ids = {i for i in [self._token_id("eos_token")] if i is not None}
        generation_config = self.folder / "generation_config.json"
        if generation_config.is_file():
            try:
                eos = json.loads(generation_config.read_text(encoding="utf-8")).get("eos_token_id")
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                eos = None
            ids.update(eos if isinstance(eos, list) else [eos] if isinstance(eos, int) else [])
        return ids

    @property
    def num_generatable_ids(self) -> int:
        """Ids below this may be sampled: every token the tokenizer knows (not embedding padding)."""
        return self.vocab_size

    @property
    def has_tool_role(self) -> bool:
        return False  # templates differ on tool messages; tool results reach them as user turns

    def encode_prompt(self, text: str) -> list[int]:
        """Ids of a raw prompt to continue, with the BOS the model was trained to see first."""
        return self.encode(text, add_special_tokens=True)

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        """Token ids of `text`. Rendered chats already hold their special tokens: keep add_special_tokens off."""
        return self.hf.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = False) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        text = self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)
        # transformers applies the old WordPiece space clean-up when configured, but never to BPE models.
        if self.clean_up_tokenization_spaces and type(self.hf.model).__name__ != "BPE":
            for spaced, tight in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                                  (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
                text = text.replace(spaced, tight)
        return text

    # --- chat -----------------------------------------------------------------------------------

    def chat_template(self, name: str | None = None, tools: list | None = None) -> str:
        """The template `format_chat` uses: by name, else "tool_use" when tools are given, else "default"."""
        if not self.chat_templates:
            raise HeptaError(f"{self.folder} has no chat template; add a chat_template.jinja to the folder "
                             "or format the prompt yourself")
        if name is None:
            name = "tool_use" if tools is not None and "tool_use" in self.chat_templates else "default"
        if name not in self.chat_templates:
            raise HeptaError(f"{self.folder} has no chat template named {name!r}; "
                             f"choose one of {', '.join(sorted(self.chat_templates))}")
        return self.chat_templates[name]

    def format_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True, tools: list | None = None,
                    *, chat_template: str | None = None, documents: list | None = None, **kwargs) -> str:
        """Render `messages` with the folder's chat template; extra kwargs become template variables."""
        source = self.chat_template(chat_template, tools)
        if not messages:
            raise HeptaError("the chat has no messages; pass at least one {'role': ..., 'content': ...}")
        if tools is not None and not all(isinstance(tool, dict) for tool in tools):
            raise HeptaError("tools must be JSON-schema dicts like {'type': 'function', 'function': {...}}")
        try:
            compiled = _compile(source)
        except jinja2.TemplateSyntaxError as e:
            raise HeptaError(f"the chat template of {self.folder} does not compile (line {e.lineno}: {e.message}); "
                             "fix or replace the template") from e
        variables = {**self.special_tokens, **_template_data(kwargs)}  # caller kwargs win, as in transformers
        try:
            return compiled.render(messages=[_normalize_message(m) for m in messages], tools=_template_data(tools),
                                   documents=_template_data(documents), add_generation_prompt=add_generation_prompt,
                                   **variables)
        except _TemplateRaised as e:
            raise HeptaError(f"the chat template of {self.folder} rejected the messages: {e.message}") from e
        except jinja2.TemplateError as e:
            raise HeptaError(f"the chat template of {self.folder} failed on these messages ({e}); "
                             "check the messages have the roles and fields the template expects") from e

    def __repr__(self) -> str:
        return f"HFTokenizer({str(self.folder)!r}, vocab_size={self.vocab_size}, templates={sorted(self.chat_templates)})"
