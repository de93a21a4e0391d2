"""The speech side of a run: its audio tokenizer (trained here, given, or reused on resume) and
the speech conversations (recognition and synthesis over the embedded eSpeak NG data)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from itertools import islice
from pathlib import Path
from typing import Callable, Iterator

from hepta.fileio import atomic_write_text
from hepta.modality import speech_data, speech_tasks
from hepta.modality.audio_codec import AudioCodec
from hepta.modality.audio_tokenizer import AUDIO_TOKENIZER_DIR, AudioTokenizer
from hepta.modality.audio_train import timed_training
from hepta.tokenizer import Tokenizer
from hepta.train.conversations import Conversations
from hepta.train.recipes import SpeechRecipe
from hepta.train.run_tokenizer import run_tokenizer

REPORT_FILE = "report.json"
TOKENIZER_VAL_CLIPS = 60  # held-out voices saying held-out sentences (fewer for a run of very few clips)
ENCODE_CHUNK = 2000  # utterances said and encoded at a time: only their codes are kept


@dataclass
class SpeechData:
    num_codes: int
    audio_tokenizer: AudioTokenizer | None  # None in a text-only baseline run
    recipe: SpeechRecipe
    seed: int
    recognition: int  # training sentences said by the training voices
    synthesis: int  # at most this many distinct training sentences said by the house voice
    speed_range: tuple[float, float] | None = None  # recognition utterances speed-perturbed within it; None: none

    @property
    def source(self) -> str:
        perturbed = ("" if self.speed_range is None else f" ({speech_data.PERTURBED_SHARE:.0%} sped up or slowed "
                     f"down by {self.speed_range[0]:g}-{self.speed_range[1]:g}x)")
        return (f"eSpeak NG: {self.recognition:,} sentences said by {len(speech_data.voices('train'))} voices "
                f"for recognition{perturbed}, {len(speech_data.house_sentences('train', self.synthesis, self.seed)):,} "
                "by the house voice for synthesis")

    def codec(self, tokenizer: Tokenizer) -> AudioCodec:
        return AudioCodec.of(self.audio_tokenizer, tokenizer)

    def conversations(self, tokenizer: Tokenizer) -> Conversations:
        """Transcribe and say, each task drawn at its share of the recipe. The utterances are said
        and encoded a chunk at a time, so tens of thousands never hold their waves at once."""
        codec = self.codec(tokenizer)
        heard = speech_data.iter_varied_utterances("train", self.recognition, self.seed, self.speed_range)
        spoken = speech_data.iter_house_utterances("train", self.synthesis, self.seed)
        tasks = {"transcribe": [speech_tasks.transcribe_turns(c, u.text) for u, c in encoded(codec, heard)],
                 "say": [speech_tasks.say_turns(u.text, c) for u, c in encoded(codec, spoken)]}
        shares = self.recipe.task_shares
        return Conversations([t for examples in tasks.values() for t in examples],
                             [shares[task] / len(examples) for task, examples in tasks.items() for _ in examples])

    @property
    def share(self) -> float:
        return sum(self.recipe.task_shares.values())


def encoded(codec: AudioCodec, utterances: Iterator[speech_data.Utterance]) -> Iterator[tuple]:
    """(utterance without its wave, codes) for each, encoded ENCODE_CHUNK at a time."""
    while chunk := list(islice(utterances, ENCODE_CHUNK)):
        for utterance, codes in zip(chunk, codec.codes_of_many([u.wave for u in chunk])):
            yield dataclasses.replace(utterance, wave=None), codes


def utterance_counts(recipe: SpeechRecipe, recognition: int | None = None) -> tuple[int, int]:
    """A run's recognition and synthesis utterances: the recipe's, or `recognition` and half as many."""
    if recognition is None:
        return recipe.recognition_utterances, recipe.synthesis_utterances
    return recognition, max(1, recognition // 2)


def speech_utterances(recipe: SpeechRecipe, seed: int, recognition: int | None = None
                      ) -> tuple[list[speech_data.Utterance], list[speech_data.Utterance]]:
    """What the audio tokenizer trains on: the first of the run's recognition and synthesis
    utterances (training sentences and voices only), at most the recipe's `tokenizer_utterances`
    and half as many."""
    recognition, synthesis = utterance_counts(recipe, recognition)
    return (speech_data.varied_utterances("train", min(recognition, recipe.tokenizer_utterances), seed=seed),
            speech_data.house_utterances("train", min(synthesis, recipe.tokenizer_utterances // 2), seed=seed))


def prepare_speech_data(recipe: SpeechRecipe, run_dir: Path, args, is_main: bool, barrier: Callable[[], None],
                        resume: bool, log: Callable[[str], None]) -> SpeechData:
    folder = run_dir / AUDIO_TOKENIZER_DIR
    if args.text_only:
        return SpeechData(recipe.audio_tokenizer.codebook_size, None, recipe, args.seed, 0, 0)

    def train_tokenizer() -> AudioTokenizer:
        recognition, synthesis = speech_utterances(recipe, args.seed, args.speech_utterances)
        return train_in_run(recipe, folder, [u.wave for u in recognition + synthesis],
                            args.audio_tokenizer_steps or recipe.audio_tokenizer_steps, log)

    tokenizer = run_tokenizer(folder, args.audio_tokenizer, AudioTokenizer.load, train_tokenizer,
                              "audio", is_main, barrier, resume, log)
    return SpeechData(tokenizer.codebook_size, tokenizer, recipe, args.seed,
                      *utterance_counts(recipe, args.speech_utterances),
                      speed_range=recipe.speed_range if args.speed_perturbation else None)


def train_in_run(recipe: SpeechRecipe, folder: Path, waves: list, steps: int, log) -> AudioTokenizer:
    config = recipe.audio_tokenizer
    num_val = min(TOKENIZER_VAL_CLIPS, max(4, len(waves) // 10))
    val = [u.wave for u in speech_data.varied_utterances("held_out", num_val, seed=0)]
    log(f"audio tokenizer: training on {len(waves):,} clips for {steps} steps "
        f"({config.codebook_size} codes, {config.codes_per_second:g} a second)")
    tokenizer, report, _ = timed_training(waves, val, config, steps)
    tokenizer.save(folder)
    evaluated_on = f"{len(val)} held-out sentences said by held-out voices"
    atomic_write_text(folder / REPORT_FILE, json.dumps({**asdict(report), "evaluated_on": evaluated_on}, indent=2) + "\n")
    log(f"audio tokenizer: mel distance {report.mel_distance:.3f} on {evaluated_on}, {report.codes_used} codes used, "
        f"{report.seconds:.0f} s")
    return tokenizer
