"""Text tokenizer (byte-level BPE) and the layout of the one id space all modalities share.

    [ text BPE | special tokens | image codes | audio codes ]
      0 ..        text_vocab_size ..

Text ids come first and the special tokens right after them, in the fixed order of
`SPECIAL_TOKENS`; modality code blocks are appended after the specials, so adding them never
moves a text or special id. New special tokens take a reserved slot, never a new position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Protocol, Sequence, runtime_checkable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import Regex, decoders, models, pre_tokenizers, trainers

from hepta.errors import HeptaError
from hepta.fileio import atomic_write_text

TOKENIZER_FILE = "tokenizer.json"

# Append-only: the position of a token in this list is its offset after the text block.
NAMED_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|pad|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|tool|>",
    "<|end|>",
    "<|image_start|>",
    "<|image_end|>",
    "<|image_row|>",  # row break inside an image token grid
    "<|audio_start|>",
    "<|audio_end|>",
    "<|video_start|>",
    "<|video_end|>",
    "<|frame|>",  # marks the start of each video frame
    # the digits of a video frame's timestamp in tokens of their own (video_span.VideoVocab.timestamp)
    *(f"<|time_{d}|>" for d in range(10)),
    # the tens digit of a timestamp's seconds in tokens of its own (video_span.StampForm.TENS)
    *(f"<|tens_{d}|>" for d in range(6)),
)
NUM_SPECIAL_TOKENS = 32
# Reserved slots are numbered from the first one after <|frame|>, as in every tokenizer written before the time
# digits took the first ten of them and the tens digits the next six; those keep their reserved names in older
# files (`LEGACY_NAMES`).
FIRST_RESERVED = NAMED_SPECIAL_TOKENS.index("<|time_0|>")
SPECIAL_TOKENS = NAMED_SPECIAL_TOKENS + tuple(
    f"<|reserved_{i - FIRST_RESERVED}|>" for i in range(len(NAMED_SPECIAL_TOKENS), NUM_SPECIAL_TOKENS)
)
LEGACY_NAMES = {**{f"<|time_{d}|>": f"<|reserved_{d}|>" for d in range(10)},
                **{f"<|tens_{d}|>": f"<|reserved_{10 + d}|>" for d in range(6)}}
CHAT_ROLES = ("system", "user", "assistant", "tool")


@runtime_checkable
class TextTokenizer(Protocol):
    """What generation, grammar constraints and the server use of a tokenizer.

    hepta's own `Tokenizer` and the Hugging Face folder's `hepta.interop.hf_tokenizer.HFTokenizer`
    both fit; code that serves either takes this type and asks it, never which class it holds.
    """

    hf: HFTokenizer  # the `tokenizers` table itself: grammar-constrained decoding reads its tokens

    @property
    def vocab_size(self) -> int: ...

    @property
    def bos_id(self) -> int | None:
        """The id a prompt starts with, or None where the model was trained without one."""

    @property
    def eos_id(self) -> int: ...

    @property
    def stop_ids(self) -> set[int]:
        """Ids that end a generation."""

    @property
    def num_generatable_ids(self) -> int:
        """Ids below this may be sampled."""

    @property
    def has_tool_role(self) -> bool:
        """Whether `format_chat` renders `tool` messages; without it tool results are sent as user turns."""

    def encode(self, text: str) -> list[int]: ...

    def encode_prompt(self, text: str) -> list[int]:
        """Ids of a raw prompt to continue, with whatever the model expects first."""

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str: ...

    def format_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """The chat as the model's prompt text, ending with the assistant's turn when asked."""


@dataclass(frozen=True)
class VocabLayout:
    text_vocab_size: int
    num_image_codes: int = 0
    num_audio_codes: int = 0

    @property
    def special_start(self) -> int:
        return self.text_vocab_size

    @property
    def image_start(self) -> int:
        return self.special_start + NUM_SPECIAL_TOKENS

    @property
    def audio_start(self) -> int:
        return self.image_start + self.num_image_codes

    @property
    def size(self) -> int:
        return self.audio_start + self.num_audio_codes

    @classmethod
    def of_vocabulary(cls, vocab_size: int, num_image_codes: int = 0, num_audio_codes: int = 0) -> "VocabLayout":
        """The layout of a model's `vocab_size` ids with these code blocks: text takes what is left."""
        return cls(vocab_size - NUM_SPECIAL_TOKENS - num_image_codes - num_audio_codes, num_image_codes,
                   num_audio_codes)

    def blocks(self) -> dict[str, list[int]]:
        """Each block's [first id, end id): text, special, and image and audio where there are any."""
        blocks = {"text": [0, self.text_vocab_size], "special": [self.special_start, self.image_start]}
        if self.num_image_codes:
            blocks["image"] = [self.image_start, self.audio_start]
        if self.num_audio_codes:
            blocks["audio"] = [self.audio_start, self.size]
        return blocks


def image_code_token(code: int) -> str:
    return f"<|image_code_{code}|>"


def audio_code_token(code: int) -> str:
    return f"<|audio_code_{code}|>"


class Tokenizer:
    def __init__(self, hf: HFTokenizer):
        self.hf = hf
        first_special = hf.token_to_id(SPECIAL_TOKENS[0])
        assert first_special is not None, "not a hepta tokenizer: special tokens are missing"
        image_start = first_special + NUM_SPECIAL_TOKENS
        # the code blocks, when present: image_code_0.. from image_start on, then audio_code_0.., nothing after
        vocab = hf.get_vocab(with_added_tokens=True)
        num_image_codes = sum(1 for token in vocab if token.startswith("<|image_code_"))
        num_audio_codes = sum(1 for token in vocab if token.startswith("<|audio_code_"))
        assert num_image_codes == 0 or hf.token_to_id(image_code_token(0)) == image_start, "image codes out of place"
        assert num_audio_codes == 0 or hf.token_to_id(audio_code_token(0)) == image_start + num_image_codes, \
            "audio codes out of place"
        self.layout = VocabLayout(text_vocab_size=first_special, num_image_codes=num_image_codes,
                                  num_audio_codes=num_audio_codes)
        assert self.layout.size == hf.get_vocab_size(with_added_tokens=True), "ids after the code blocks"
        self.special_ids = {tok: self.layout.special_start + i for i, tok in enumerate(SPECIAL_TOKENS)}
        assert all(hf.token_to_id(t) == i or hf.token_to_id(LEGACY_NAMES.get(t, t)) == i
                   for t, i in self.special_ids.items()), "special tokens out of place"

    def with_image_codes(self, num_codes: int) -> "Tokenizer":
        """A copy whose vocabulary ends with `num_codes` image code ids; text and special ids stay where they are."""
        if self.layout.num_image_codes or self.layout.num_audio_codes:
            raise HeptaError("this tokenizer already holds a code block; start from the text tokenizer")
        hf = HFTokenizer.from_str(self.hf.to_str())
        hf.add_special_tokens([image_code_token(i) for i in range(num_codes)])
        return Tokenizer(hf)

    def with_audio_codes(self, num_codes: int) -> "Tokenizer":
        """A copy whose vocabulary ends with `num_codes` audio code ids, after the image block when there is one."""
        if self.layout.num_audio_codes:
            raise HeptaError("this tokenizer already holds an audio code block")
        hf = HFTokenizer.from_str(self.hf.to_str())
        hf.add_special_tokens([audio_code_token(i) for i in range(num_codes)])
        return Tokenizer(hf)

    # --- construction -----------------------------------------------------------------

    @classmethod
    def train(cls, texts: Iterable[str], text_vocab_size: int, digit_tokens: bool = False) -> "Tokenizer":
        """Train byte-level BPE with `text_vocab_size` text ids, every two-digit number one of them
        (`with_two_digit_numbers`), then append the special tokens. With `digit_tokens`, every number is
        written a digit a token instead (`train_bpe`)."""
        hf = train_bpe(texts, text_vocab_size, digit_tokens)
        if not digit_tokens:
            hf = with_two_digit_numbers(hf)
        hf.add_special_tokens(list(SPECIAL_TOKENS))
        return cls(hf)

    @classmethod
    def load(cls, folder: str | Path) -> "Tokenizer":
        path = Path(folder) / TOKENIZER_FILE
        if not path.is_file():
            raise HeptaError(f"{path} is missing; a hepta model folder holds its tokenizer.json")
        try:
            hf = HFTokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises a bare Exception on bad JSON
            raise HeptaError(f"{path} is not a valid tokenizer file ({e}); restore it from the training run") from e
        if hf.token_to_id(SPECIAL_TOKENS[0]) is None:
            raise HeptaError(f"{path} lacks hepta's special tokens; it is not a hepta tokenizer")
        return cls(hf)

    def save(self, folder: str | Path) -> None:
        atomic_write_text(Path(folder) / TOKENIZER_FILE, self.hf.to_str(pretty=False))

    # --- use ----------------------------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return self.hf.get_vocab_size(with_added_tokens=True)

    @property
    def digit_tokens(self) -> bool:
        """Whether every number is written a digit a token (`train_bpe`)."""
        return len(self.hf.pre_tokenizer.pre_tokenize_str("10")) == 2

    @property
    def bos_id(self) -> None:
        return None  # hepta trains without a BOS; documents are separated by <|endoftext|>

    @property
    def eos_id(self) -> int:
        return self.special_ids["<|endoftext|>"]

    @property
    def end_id(self) -> int:
        return self.special_ids["<|end|>"]

    @property
    def stop_ids(self) -> set[int]:
        return {self.eos_id, self.end_id}

    @property
    def num_generatable_ids(self) -> int:
        """Only text may be sampled: role, modality and reserved ids are structure."""
        return self.layout.text_vocab_size

    @property
    def has_tool_role(self) -> bool:
        return True  # <|tool|> is one of the chat roles

    def encode_prompt(self, text: str) -> list[int]:
        """Ids of a raw prompt to continue (hepta adds no BOS)."""
        return self.encode(text)

    def encode(self, text: str) -> list[int]:
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def format_chat(self, messages: Sequence[dict], add_generation_prompt: bool = True) -> str:
        """Render chat messages as `<|role|>content<|end|>...`, ending with `<|assistant|>`."""
        parts = []
        for message in messages:
            role = message.get("role")
            if role not in CHAT_ROLES:
                raise HeptaError(f"unknown chat role {role!r}; use one of {', '.join(CHAT_ROLES)}")
            parts.append(f"<|{role}|>{message.get('content') or ''}<|end|>")
        if add_generation_prompt:
            parts.append("<|assistant|>")
        return "".join(parts)

    def describe_layout(self) -> dict:
        return self.layout.blocks()

    def __repr__(self) -> str:
        return f"Tokenizer({json.dumps(self.describe_layout())})"


# One digit, with the space before it if there is one: " 7" stays the token it is in "the 7 first appeared".
DIGIT = Regex(r" ?[0-9]")


def train_bpe(texts: Iterable[str], vocab_size: int, digit_tokens: bool = False) -> HFTokenizer:
    """Byte-level BPE of `vocab_size` ids as the corpus gives them, nothing added. With `digit_tokens`,
    each digit is split from its neighbours before any merge, so every number is written a digit a
    token ("0:35" as "0" ":" "3" "5"), as the tokenizers of Llama 2 and Qwen write numbers.

    Why: a video model copies a time from the frame's timestamp into its caption and its reply. With
    "35" one token, writing it means composing one token from the two characters read, and the
    composition sometimes loses their order ("0m53" on the frame stamped 0:35: docs/multimodal.md);
    a digit a token makes each digit a copy of one character in its place."""
    hf = HFTokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.pre_tokenizer = (pre_tokenizers.Sequence([pre_tokenizers.Split(DIGIT, behavior="isolated"), byte_level])
                        if digit_tokens else byte_level)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[], show_progress=False)
    hf.train_from_iterator(texts, trainer=trainer)
    return hf


NUMBERS_SHARE_OF_MERGES = 16  # the two-digit numbers a BPE lacks replace at most 1/16 of its merges


def with_two_digit_numbers(hf: HFTokenizer) -> HFTokenizer:
    """The trained BPE with every two-digit number, "00" to "99", one token: the merges of those it lacks
    take the places of its last (rarest) merges, so the text ids keep their count.

    Why: a clock's seconds must be written the same way whatever their value. Trained on code and
    prose, BPE learns "14" but not "51" or "39" (23 of the 100 pairs in omni-tiny's tokenizer), so a
    video model that copies the time "0:14" as one token had to spell "0:51" as "5" "1", a rarer form,
    and wrote the wrong second there (docs/multimodal.md). A small vocabulary, where the numbers it lacks
    would take more than a sixteenth of its merges, is left as it is: there they would crowd out the text's own."""
    spec = json.loads(hf.to_str())
    vocab, merges = spec["model"]["vocab"], spec["model"]["merges"]
    numbers = {f"{n:02d}" for n in range(100)}
    missing = sorted(numbers - vocab.keys())
    if not missing or len(missing) * NUMBERS_SHARE_OF_MERGES > len(merges):
        return hf
    as_text = isinstance(merges[0], str)  # "5 1" in older files, ["5", "1"] in newer ones
    made = ["".join(pair.split(" ") if as_text else pair) for pair in merges]
    # The last merges that make no number go. No earlier merge uses what a later one makes, and a
    # number's merge uses two bytes only, so the merges left all still have their parts.
    dropped = set([i for i in reversed(range(len(merges))) if made[i] not in numbers][:len(missing)])
    freed = sorted(vocab.pop(made[i]) for i in dropped)
    merges[:] = [pair for i, pair in enumerate(merges) if i not in dropped]
    for number, token_id in zip(missing, freed):
        vocab[number] = token_id
        merges.append(f"{number[0]} {number[1]}" if as_text else [number[0], number[1]])
    return HFTokenizer.from_str(json.dumps(spec))
