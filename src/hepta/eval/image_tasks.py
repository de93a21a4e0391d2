"""The image tasks of `hepta eval`, each over the held-out digits, answered by hepta's engine.

All prompts of a task go to the engine at once (`generate_many`), so it batches them as it would
concurrent API requests; the prompts are the training conversations' user turns
(`modality/digits.py`), rendered by `encode_chat`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from hepta.errors import HeptaError
from hepta.eval import scoring
from hepta.eval.judge import digit_judge
from hepta.infer.engine import Engine, EngineConfig, generate_many
from hepta.infer.request import Request
from hepta.infer.sampling import SamplingParams
from hepta.modality import digits
from hepta.modality.chat import encode_chat
from hepta.modality.codec import ImageCodec

GREEDY = SamplingParams(temperature=0.0)


@dataclass
class ImageEval:
    engine: Engine
    tokenizer: object
    codec: ImageCodec
    held_out: digits.Digits
    on_answer: Callable[[], None] = lambda: None  # called as each request finishes (progress)

    @classmethod
    def open(cls, model, tokenizer, codec: ImageCodec | None, folder: str, limit: int | None,
             max_num_seqs: int = 64) -> "ImageEval":
        if codec is None:
            raise HeptaError(f"{folder} reads and writes text only (no image_tokenizer/ folder), so it cannot be "
                             "evaluated on image tasks; pass a model trained with --preset omni-tiny or --task text")
        held_out = digits.load_digits_split("held_out")
        if limit is not None:
            held_out = digits.Digits(held_out.images[:limit], held_out.labels[:limit], held_out.indices[:limit])
        engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=max_num_seqs), images=codec.vocab).start()
        return cls(engine, tokenizer, codec, held_out)

    def close(self) -> None:
        self.engine.stop()

    def _prompt(self, turns, image_answer: bool) -> list[int]:
        ids, _ = encode_chat(turns, self.tokenizer, self.codec.vocab)
        return ids + ([self.codec.vocab.start_id] if image_answer else [])  # the answer opened as an image

    def _run(self, prompts: list[list[int]], max_tokens: int, sampling: SamplingParams | list[SamplingParams]) -> list:
        samplings = sampling if isinstance(sampling, list) else [sampling] * len(prompts)
        requests = [Request(p, max_tokens=max_tokens, sampling=s) for p, s in zip(prompts, samplings)]
        return [choices[0] for choices in generate_many(self.engine, requests, on_done=lambda _i: self.on_answer())]

    def _images(self, prompts: list[list[int]], sampling: SamplingParams | list[SamplingParams]) -> np.ndarray:
        # the rest of the span and the end of the turn; the engine keeps the span well formed
        choices = self._run(prompts, self.codec.vocab.span_length, sampling)
        start = [self.codec.vocab.start_id]
        return np.stack([self.codec.images_in(start + c.token_ids)[0] for c in choices])

    # --- the tasks ------------------------------------------------------------------------

    def recognition(self) -> dict:
        codes = self.codec.codes(self.held_out.images)
        answers = self._run([self._prompt(digits.recognise_turns(c), False) for c in codes], 4, GREEDY)
        return {"n": len(answers), "accuracy": scoring.recognition_accuracy([c.text for c in answers],
                                                                             self.held_out.labels)}

    def generation(self, temperature: float, top_p: float, seed: int) -> dict:
        """One drawing per held-out label, in order, sampled (request i seeded seed + i)."""
        labels = self.held_out.labels
        prompts = [self._prompt(digits.draw_turns(int(d)), True) for d in labels]
        samplings = [SamplingParams(temperature=temperature, top_p=top_p, seed=seed + i) for i in range(len(prompts))]
        images = self._images(prompts, samplings)
        return {"n": len(labels), "accuracy": scoring.generation_accuracy(digit_judge(), images, labels),
                "temperature": temperature, "top_p": top_p, "seed": seed}

    def editing(self) -> dict:
        codes = self.codec.codes(self.held_out.images)
        per_edit = {}
        for edit in digits.EDITS:
            images = self._images([self._prompt(digits.edit_turns(c, edit), True) for c in codes], GREEDY)
            per_edit[edit] = scoring.editing_scores(digit_judge(), edit, images, self.held_out.images,
                                                    self.held_out.labels)
        n = len(self.held_out.labels) * len(per_edit)
        return {"n": n, "accuracy": float(np.mean([s["accuracy"] for s in per_edit.values()])),
                "mae": float(np.mean([s["mae"] for s in per_edit.values()])), "per_edit": per_edit}
