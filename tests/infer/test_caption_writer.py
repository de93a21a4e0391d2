"""The model writes each frame's caption as it reads a video: every caption is what greedy decoding
writes after everything before it, and the prompt around the captions is kept as it was."""

import pytest
import torch

from hepta.infer.caption_writer import CAPTION_TOKENS, caption_slots, write_captions
from hepta.infer.engine import Engine, EngineConfig, generate
from hepta.infer.request import Request
from hepta.infer.sampling import SamplingParams
from helpers import engine_model_and_tokenizer


@pytest.fixture(scope="module")
def engine(corpus):
    model, tokenizer = engine_model_and_tokenizer(corpus)
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=4)).start()
    yield engine
    engine.stop()


def test_the_slots_are_the_empty_captions_inside_the_video():
    from hepta.modality.image_span import ImageVocab
    from hepta.modality.video_span import VideoVocab

    video = VideoVocab(start_id=90, end_id=91, frame_id=92, images=ImageVocab(93, 94, 95, 100, 16, 2))
    end, image = 7, [93, 100, 101, 95, 102, 103, 94]
    ids = [1, 90, 92, *image, end, 92, *image, end, 91, 2, 3, end]  # two captioned frames, then an earlier answer
    marked = [i in (10, 19, 23) for i in range(len(ids))]  # both captions' end ids, and the answer's
    assert caption_slots(ids, marked, video) == [10, 19]


def test_each_caption_is_what_the_model_writes_having_read_everything_before_it(engine):
    end = engine.tokenizer.end_id
    text = engine.tokenizer.encode
    pieces = [text("def reads(frames):"), text(" one"), text(" two three"), text(" four")]
    prompt, slots = list(pieces[0]), []
    for piece in pieces[1:]:
        slots.append(len(prompt))
        prompt += [end] + piece
    short = text("x = 1")  # a second prompt with one slot, written in the same rounds
    prompts = write_captions(engine, [prompt, short + [end]], [slots, [len(short)]])

    expected = list(pieces[0])
    for piece in pieces[1:]:
        caption = generate(engine, Request(expected, max_tokens=CAPTION_TOKENS,
                                           sampling=SamplingParams(temperature=0.0)))[0].token_ids
        assert len(caption) <= CAPTION_TOKENS
        expected += caption + [end] + piece
    assert prompts[0] == expected
    alone = generate(engine, Request(short, max_tokens=CAPTION_TOKENS, sampling=SamplingParams(temperature=0.0)))
    assert prompts[1] == short + alone[0].token_ids + [end]
    assert torch.tensor(prompts[0]).eq(end).sum() == len(slots)  # no end id inside a caption: it closes one
