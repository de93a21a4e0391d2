"""One prompt continued by the engine, its text streamed as it decodes (`hepta generate`, the demo).

The caller is a one-request client of an engine it starts in this process, with one slot sized
to the request; the engine stops when the text is done or the caller leaves early (Ctrl-C, a
closed pipe), which cancels the request first.
"""

from __future__ import annotations

from typing import Iterator, Sequence

from hepta.errors import HeptaError
from hepta.infer.collect import Choice, Collector
from hepta.infer.engine import Engine, EngineConfig, stream_events
from hepta.infer.request import Request
from hepta.infer.sampling import SamplingParams
from hepta.modality.image_span import ImageVocab
from hepta.model import Transformer
from hepta.tokenizer import TextTokenizer


def stream_completion(model: Transformer, tokenizer: TextTokenizer, prompt: str, max_tokens: int,
                      sampling: SamplingParams = SamplingParams(), stop: Sequence[str] = (),
                      result: Choice | None = None) -> Iterator[str]:
    """Text deltas of the continuation of `prompt`; fills `result` (text, token ids without the end
    token, finish reason) as they arrive.

    The request is checked here, before the first delta is asked for, so a caller can report
    a bad prompt before printing anything. At most `max_tokens` tokens, fewer when the model's
    context ends first.
    """
    prompt_ids = tokenizer.encode_prompt(prompt)
    if not prompt_ids:  # the model continues from the start of a document
        prompt_ids = [tokenizer.bos_id if tokenizer.bos_id is not None else tokenizer.eos_id]
    return stream_ids(model, tokenizer, prompt_ids, max_tokens, sampling, stop, result)


def stream_ids(model: Transformer, tokenizer: TextTokenizer, prompt_ids: list[int], max_tokens: int,
               sampling: SamplingParams = SamplingParams(), stop: Sequence[str] = (), result: Choice | None = None,
               images: ImageVocab | None = None) -> Iterator[str]:
    """`stream_completion` for a prompt already in ids (a chat with images); `images`, the model's
    image block, keeps the image spans it writes well formed. Checked before the first delta."""
    context = model.config.max_seq_len
    if len(prompt_ids) >= context:
        raise HeptaError(f"the prompt is {len(prompt_ids)} tokens but the model's context is {context}; "
                         "shorten the prompt")
    if max_tokens <= 0:
        raise HeptaError(f"max_tokens (--max-tokens of hepta generate) is {max_tokens}; ask for 1 token or more")
    request = Request(prompt_ids, min(max_tokens, context - len(prompt_ids)), sampling, stop=tuple(stop))
    return _stream(model, tokenizer, request, result if result is not None else Choice(), images)


def _stream(model: Transformer, tokenizer: TextTokenizer, request: Request, result: Choice,
            images: ImageVocab | None) -> Iterator[str]:
    # one slot of exactly this request's length: the cache costs what the request needs, not the whole context
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=1, max_queue=1,
                                                   max_model_len=len(request.prompt_ids) + request.max_tokens),
                    images=images)
    collector = Collector(num_choices=1, end_ids=engine.end_ids, choices=[result])
    engine.start()
    try:
        for event in stream_events(engine, request, collector):
            if event.text:
                yield event.text
    finally:
        request.cancel()
        engine.stop()
