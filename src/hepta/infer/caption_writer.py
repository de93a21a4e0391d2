"""The model writes its own frame captions while it reads a video, then the question is answered.

A model trained with captions (`modality/video_reading.py`) learned to write, after each frame, what
the frame shows, and its answer rests on those captions. So a prompt is not sent whole: the engine
gets it up to the first caption slot, writes the caption (greedy, ended by the end-of-reply id the
training put after each caption), and the next request continues with the caption, the next frame,
and so on. Each request repeats the one before it plus a frame, so the engine's prefix cache serves
what was read already and only the new frame is prefilled. Many prompts go through together, one
caption slot of each per round.
"""

from __future__ import annotations

import asyncio

import torch

from hepta.infer.collect import Collector
from hepta.infer.engine import Engine, generate_many
from hepta.infer.request import Event, Request
from hepta.infer.sampling import SamplingParams
from hepta.modality.video_span import VideoVocab

CAPTION_TOKENS = 12  # the longest caption: a number, a digit, the mark and a time ("3=7 * 0m14") with room to spare


def caption_slots(ids: list[int], marked: list[bool], video: VideoVocab) -> list[int]:
    """Positions of the empty captions in a chat encoded with an empty caption per frame: each is just
    its end id, marked as something the model writes (`encode_chat`'s second list, which also marks
    earlier assistant turns), and inside a video span."""
    inside = video.video_mask(torch.tensor(ids)).tolist()
    return [i for i, (flag, in_video) in enumerate(zip(marked, inside)) if flag and in_video]


def write_captions(engine: Engine, prompts: list[list[int]], slots: list[list[int]],
                   max_tokens: int = CAPTION_TOKENS) -> list[list[int]]:
    """`prompts` with each slot (the position of an empty caption's end id) preceded by the caption
    the model writes there, greedy, having read everything before it."""
    pieces = [_split(ids, where) for ids, where in zip(prompts, slots)]  # [before slot 1, between, ..., after]
    read = [p[0] for p in pieces]
    for caption in range(max((len(where) for where in slots), default=0)):
        waiting = [i for i, where in enumerate(slots) if caption < len(where)]
        requests = [Request(read[i], max_tokens=max_tokens, sampling=SamplingParams(temperature=0.0))
                    for i in waiting]
        for i, choices in zip(waiting, generate_many(engine, requests)):
            end = prompts[i][slots[i][caption]]
            read[i] = read[i] + choices[0].token_ids + [end] + pieces[i][caption + 1]
    return read


async def write_captions_served(engine, prompt: list[int], slots: list[int],
                                max_tokens: int = CAPTION_TOKENS) -> list[int]:
    """`write_captions` for one prompt through the server's engine client (`infer/client.py`), whose
    events arrive on this event loop; a failed caption raises as a failed generation does."""
    pieces = _split(prompt, slots)
    read = pieces[0]
    for caption, slot in enumerate(slots):
        collector, finished = Collector(1, engine.end_ids), asyncio.Event()
        failure: list[Exception] = []

        def sink(event: Event, collector=collector, finished=finished, failure=failure) -> None:
            try:
                collector.add(0, event)
            except Exception as e:  # noqa: BLE001 - handed to the awaiting caller below
                failure.append(e)
            if failure or collector.done:
                finished.set()

        request = await engine.submit(Request(read, max_tokens=max_tokens, sampling=SamplingParams(temperature=0.0),
                                              sink=sink))
        try:
            await finished.wait()
        except asyncio.CancelledError:  # the client went away: the caption's slot is freed at once
            engine.cancel(request)
            raise
        if failure:
            raise failure[0]
        read = read + collector.choices[0].token_ids + [prompt[slot]] + pieces[caption + 1]
    return read


def _split(ids: list[int], slots: list[int]) -> list[list[int]]:
    bounds = [-1, *slots, len(ids)]
    return [ids[a + 1:b] for a, b in zip(bounds, bounds[1:])]
