"""The speech side of a run: its audio tokenizer (trained here, given, or reused on resume) and
the speech conversations (recognition and synthesis over the embedded eSpeak NG data)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

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


@dataclass
class SpeechData:
    num_codes: int
    audio_tokenizer: AudioTokenizer | None  # None in a text-only baseline run
    recipe: SpeechRecipe
    recognition: list[speech_data.Utterance]
    synthesis: list[speech_data.Utterance]

    @property
    def source(self) -> str:
        return (f"eSpeak NG: {len(self.recognition):,} sentences said by {len(speech_data.voices('train'))} voices "
                f"for recognition, {len(self.synthesis):,} by the house voice for synthesis")

    def codec(self, tokenizer: Tokenizer) -> AudioCodec:
        return AudioCodec.of(self.audio_tokenizer, tokenizer)

    def conversations(self, tokenizer: Tokenizer) -> Conversations:
        """Transcribe and say, each task drawn at its share of the recipe."""
        codec = self.codec(tokenizer)
        heard = codec.codes_of_many([u.wave for u in self.recognition])
        spoken = codec.codes_of_many([u.wave for u in self.synthesis])
        tasks = {"transcribe": [speech_tasks.transcribe_turns(c, u.text) for c, u in zip(heard, self.recognition)],
                 "say": [speech_tasks.say_turns(u.text, c) for c, u in zip(spoken, self.synthesis)]}
        shares = self.recipe.task_shares
        return Conversations([t for examples in tasks.values() for t in examples],
                             [shares[task] / len(examples) for task, examples in tasks.items() for _ in examples])

    @property
    def share(self) -> float:
        return sum(self.recipe.task_shares.values())


def speech_utterances(recipe: SpeechRecipe, seed: int, recognition: int | None = None
                      ) -> tuple[list[speech_data.Utterance], list[speech_data.Utterance]]:
    """The run's recognition and synthesis utterances (training sentences and voices only);
    `recognition` overrides the recipe's count, and synthesis then gets half as many."""
    synthesis = recipe.synthesis_utterances if recognition is None else max(1, recognition // 2)
    return (speech_data.varied_utterances("train", recognition or recipe.recognition_utterances, seed=seed),
            speech_data.house_utterances("train", synthesis, seed=seed))


def prepare_speech_data(recipe: SpeechRecipe, run_dir: Path, args, is_main: bool, barrier: Callable[[], None],
                        resume: bool, log: Callable[[str], None]) -> SpeechData:
    folder = run_dir / AUDIO_TOKENIZER_DIR
    if args.text_only:
        return SpeechData(recipe.audio_tokenizer.codebook_size, None, recipe, [], [])
    recognition, synthesis = speech_utterances(recipe, args.seed, args.speech_utterances)
    tokenizer = run_tokenizer(folder, args.audio_tokenizer, AudioTokenizer.load,
                              lambda: train_in_run(recipe, folder, [u.wave for u in recognition + synthesis],
                                                   args.audio_tokenizer_steps or recipe.audio_tokenizer_steps, log),
                              "audio", is_main, barrier, resume, log)
    return SpeechData(tokenizer.codebook_size, tokenizer, recipe, recognition, synthesis)


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
