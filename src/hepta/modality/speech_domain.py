"""The embedded speech domain: short commands and numbers, about 100 words, said by eSpeak NG.

Sentences come from templates over slots (devices, places, numbers said as words, digit strings),
so the same small vocabulary makes tens of thousands of different sentences. Two things are held
out from the audio tokenizer and the model alike, each by a stable hash of its name: one
sentence in five (`is_held_out_sentence`) and one voice variant in five (`HELD_OUT_VOICES`).
Every reported speech figure uses only held-out sentences said by held-out voices.
"""

from __future__ import annotations

import random
import zlib

ONES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEENS = ("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")

DEVICES = ("lights", "lamp", "fan", "heater", "radio", "music", "television", "oven", "alarm", "camera")
OPENABLE = ("door", "window", "garage", "gate", "curtains")
SETTINGS = ("temperature", "volume", "timer", "brightness", "speed", "channel")
ROOMS = ("kitchen", "bedroom", "office", "garden", "hall")
DIRECTIONS = ("left", "right", "up", "down", "forward", "back")
SHORT_COMMANDS = ("yes", "no", "stop", "go", "cancel", "start", "pause", "help", "repeat that", "what time is it",
                  "good morning", "good night", "thank you", "please wait", "call home", "next", "previous")

HELD_OUT_EVERY = 5
WORD_SEQUENCE_LENGTHS = (1, 6)  # words in a random word sequence (`word_sequence`)

# eSpeak NG's voice variants (its `voices/!v` folder). The whispered ones have no voiced sound at
# all, which a 16 kHz log-mel tokenizer of this size does not learn from a few utterances: left out.
EXCLUDED_VOICES = frozenset({"whisper", "whisperf"})


def number_words(n: int) -> str:
    """0..999 as spoken English words without "and": 342 -> "three hundred forty two"."""
    assert 0 <= n < 1000
    if n < 10:
        return ONES[n]
    if n < 20:
        return TEENS[n - 10]
    if n < 100:
        tens, ones = divmod(n, 10)
        return TENS[tens] + (f" {ONES[ones]}" if ones else "")
    hundreds, rest = divmod(n, 100)
    return f"{ONES[hundreds]} hundred" + (f" {number_words(rest)}" if rest else "")


def _template(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.22:
        return f"turn {rng.choice(('on', 'off'))} the {rng.choice(DEVICES)}" + (
            f" in the {rng.choice(ROOMS)}" if rng.random() < 0.4 else "")
    if kind < 0.36:
        return f"{rng.choice(('open', 'close', 'lock'))} the {rng.choice(OPENABLE)}"
    if kind < 0.54:
        return f"set the {rng.choice(SETTINGS)} to {number_words(rng.randrange(0, 100 if rng.random() < 0.7 else 1000))}"
    if kind < 0.66:
        steps = number_words(rng.randrange(1, 20))
        return f"move {rng.choice(DIRECTIONS)} {steps} {'step' if steps == 'one' else 'steps'}"
    if kind < 0.80:
        return " ".join(ONES[rng.randrange(10)] for _ in range(rng.randint(2, 5)))
    if kind < 0.88:
        return number_words(rng.randrange(0, 1000))
    return rng.choice(SHORT_COMMANDS)


def is_held_out_sentence(sentence: str) -> bool:
    return zlib.crc32(sentence.encode()) % HELD_OUT_EVERY == 0


def is_held_out_voice(variant: str) -> bool:
    return zlib.crc32(variant.encode()) % HELD_OUT_EVERY == 0


def word_sequence(rng: random.Random, words: list[str], lengths: tuple[int, int] = WORD_SEQUENCE_LENGTHS) -> str:
    """A few of the domain's words in a random order ("garden seven lock"): no template predicts them."""
    return " ".join(rng.choice(words) for _ in range(rng.randint(*lengths)))


def sentences(split: str, count: int, seed: int, word_share: float = 0.0) -> list[str]:
    """`count` sentences of a split ("train" or "held_out"), repeats allowed, the same for the same seed.

    With `word_share` (training only), that share of them are random word sequences instead
    (`word_sequence`), so a recogniser must hear each word rather than lean on the templates; they
    come from their own random stream, so the template sentences among them stay those drawn without."""
    want_held_out = {"train": False, "held_out": True}[split]
    if word_share and want_held_out:
        raise ValueError("only training sentences mix in random word sequences; held-out ones stay the templates'")
    rng = random.Random(f"speech-sentences-{split}-{seed}")
    word_rng, words = random.Random(f"speech-words-{seed}"), vocabulary()
    chosen: list[str] = []
    while len(chosen) < count:
        sentence = word_sequence(word_rng, words) if word_rng.random() < word_share else _template(rng)
        if is_held_out_sentence(sentence) == want_held_out:
            chosen.append(sentence)
    return chosen


def vocabulary() -> list[str]:
    """Every word a domain sentence can hold (what the independent recogniser listens for)."""
    words = set(ONES + TEENS + tuple(t for t in TENS if t) + DEVICES + OPENABLE + SETTINGS + ROOMS + DIRECTIONS)
    words |= {"hundred", "turn", "on", "off", "the", "in", "open", "close", "lock", "set", "to", "move", "step", "steps"}
    for command in SHORT_COMMANDS:
        words |= set(command.split())
    return sorted(words)
