"""hepta's tokenizer described for transformers: the files beside tokenizer.json that let other tools
read an exported folder as hepta reads its own.

tokenizer.json alone gives the ids. What transformers, `transformers serve`, vLLM and hepta's own
Hugging Face path also need is which token ends a text, which one pads, how a chat is written, and
when generation stops: tokenizer_config.json (with the chat template) and generation_config.json.
The template writes a conversation exactly as `Tokenizer.format_chat` does, so a converted model
sees the prompts it was trained on.
"""

from __future__ import annotations

import json
from pathlib import Path

from hepta.fileio import atomic_write_text
from hepta.tokenizer import CHAT_ROLES, Tokenizer

TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
GENERATION_CONFIG_FILE = "generation_config.json"

# `<|role|>content<|end|>` per message, then `<|assistant|>` when an answer is asked for
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in " + json.dumps(list(CHAT_ROLES)) + " -%}"
    "{{ raise_exception(\"unknown chat role '\" ~ message['role'] ~ \"'; use one of " + ", ".join(CHAT_ROLES) + "\") }}"
    "{%- endif -%}"
    "<|{{ message['role'] }}|>{{ message['content'] or '' }}<|end|>"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def tokenizer_config(tokenizer: Tokenizer, max_len: int) -> dict:
    """tokenizer_config.json: the fast tokenizer class, its special tokens and the chat template."""
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": None,  # hepta trains without a BOS
        "eos_token": "<|endoftext|>",
        "pad_token": "<|pad|>",
        "unk_token": None,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }


def generation_config(tokenizer: Tokenizer) -> dict:
    """generation_config.json: a text ends at <|endoftext|>, an answer at <|end|>."""
    return {"bos_token_id": None, "eos_token_id": [tokenizer.eos_id, tokenizer.end_id],
            "pad_token_id": tokenizer.special_ids["<|pad|>"]}


def write_tokenizer_files(tokenizer: Tokenizer, folder: str | Path, max_len: int) -> None:
    """Writes tokenizer.json, tokenizer_config.json and generation_config.json into `folder`."""
    folder = Path(folder)
    tokenizer.save(folder)
    atomic_write_text(folder / TOKENIZER_CONFIG_FILE, json.dumps(tokenizer_config(tokenizer, max_len), indent=2) + "\n")
    atomic_write_text(folder / GENERATION_CONFIG_FILE, json.dumps(generation_config(tokenizer), indent=2) + "\n")
