"""Video through the chat API with the real `openai` client: video_url parts as vLLM and Qwen's
clients send them, sampled on the server at the asked rate, and every bad video refused with a 400
naming its part (a video over the length limit before it is decoded); frames that repeat the last one
are left out."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest
from conftest import client, start_server
from helpers import hours_long_video
from omni_fixture import make_omni_folder

from hepta.modality import digits
from hepta.modality import video_data as vd
from hepta.modality.video_io import encode_video

CONTEXT = 2048  # holds 30 changing frames at 1 frame a second (~800 tokens), not 180 of them


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    return make_omni_folder(tmp_path_factory.mktemp("omni") / "omni", max_seq_len=CONTEXT)


@pytest.fixture(scope="module")
def video_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("allowed")


@pytest.fixture(scope="module")
def omni(omni_dir, video_dir):
    server = start_server(omni_dir, allow_image_dirs=(str(video_dir),), engine={"max_num_seqs": 2})
    yield client(server)
    server.stop()


def clip_mp4(folder, seconds: int, name: str = "clip"):
    held_out = digits.load_digits_split("held_out")
    return vd.write_clip(folder, name, vd.plan_clip(np.random.default_rng(seconds), seconds, held_out), held_out)


def noise_mp4(seconds: int) -> bytes:
    """A clip whose every second shows a new pattern of black and white 2x2 blocks (one block per
    image code), so no sampled frame repeats another."""
    blocks = np.random.default_rng(seconds).integers(0, 2, (seconds, 1, 1, 8, 8)).astype(np.float32)
    frames = np.repeat(np.repeat(np.repeat(blocks, 4, axis=1), 2, axis=3), 2, axis=4)
    return encode_video(frames.reshape(seconds * 4, 1, 16, 16), fps=4)


def data_url(data: bytes, media: str = "video/mp4") -> str:
    return f"data:{media};base64," + base64.b64encode(data).decode("ascii")


def ask(omni, video_url: dict, **extra):
    messages = [{"role": "user", "content": [{"type": "video_url", "video_url": video_url},
                                             {"type": "text", "text": "How many digits appeared?"}]}]
    return omni.chat.completions.create(model="micro", messages=messages, max_tokens=4, temperature=0, **extra)


def test_a_clip_as_a_data_url_is_sampled_at_one_frame_a_second(omni):
    per_second = ask(omni, {"url": data_url(noise_mp4(30))}).usage.prompt_tokens
    assert 30 * 22 < per_second < 30 * 30  # 30 new frames of ~26 tokens and a question
    half = ask(omni, {"url": data_url(noise_mp4(30)), "fps": 0.5}).usage.prompt_tokens
    assert abs(half - (per_second + 40) / 2) < 60
    capped = ask(omni, {"url": data_url(noise_mp4(30))}, extra_body={"mm_processor_kwargs": {"max_frames": 5}})
    assert capped.usage.prompt_tokens < 8 * 30


def test_frames_that_repeat_the_last_one_are_left_out(omni, tmp_path):
    held_out = digits.load_digits_split("held_out")
    clip = vd.plan_clip(np.random.default_rng(7), 180, held_out)
    data = vd.write_clip(tmp_path, "still", clip, held_out).read_bytes()
    sources, _ = vd.sources_on_screen(clip)
    scenes = 1 + sum(a != b for a, b in zip(sources, sources[1:]))  # a digit or the empty screen, until it changes
    answer = ask(omni, {"url": data_url(data)})
    assert answer.choices[0].finish_reason in ("stop", "length")
    # three minutes of 2 to 9 digits, each still while it shows: one frame per scene, not 180
    assert scenes < 20 and answer.usage.prompt_tokens < scenes * 30 + 40


def test_local_files_only_inside_the_allowed_folders(omni, video_dir, tmp_path):
    inside = video_dir / "noise.mp4"
    inside.write_bytes(noise_mp4(30))
    assert ask(omni, {"url": f"file://{inside}"}).usage.prompt_tokens > 30 * 22
    outside = clip_mp4(tmp_path, 30, "elsewhere")
    with pytest.raises(openai.BadRequestError) as refused:
        ask(omni, {"url": str(outside)})
    assert "outside the folders this server may read videos from" in refused.value.message


@pytest.mark.parametrize("make, words, code", [
    (lambda folder: data_url(b"\x89PNG\r\n\x1a\n" + bytes(64), "image/png"), "not a video", None),
    (lambda folder: data_url(b"this is a text file, not a video"), "not a video", "invalid_video"),
    (lambda folder: data_url(clip_mp4(folder, 30).read_bytes()[:3000]), "damaged", "invalid_video"),
    (lambda folder: data_url(hours_long_video(10)), "10:00:00 long, over the limit of 10:00", "invalid_video"),
    (lambda folder: data_url(noise_mp4(180)), "set max_frames to", "context_length_exceeded"),
])
def test_bad_videos_get_a_400_naming_the_part(omni, tmp_path, make, words, code):
    with pytest.raises(openai.BadRequestError) as refused:
        ask(omni, {"url": make(tmp_path)})
    body = refused.value.body
    assert words in body["message"] and body["param"] == "messages[0].content[0]"
    if code:
        assert body["code"] == code


def test_bad_sampling_options_are_named(omni, tmp_path):
    data = data_url(clip_mp4(tmp_path, 30).read_bytes())
    with pytest.raises(openai.BadRequestError, match="fps must be a number above 0"):
        ask(omni, {"url": data, "fps": 0})
    with pytest.raises(openai.BadRequestError, match="max_frames must be a whole number"):
        ask(omni, {"url": data}, extra_body={"mm_processor_kwargs": {"max_frames": -1}})


def test_a_model_trained_to_caption_writes_its_captions_before_it_answers(omni, omni_dir, tmp_path):
    import shutil

    from hepta.modality.video_reading import VideoReading

    captioning = tmp_path / "captioning"
    shutil.copytree(omni_dir, captioning)
    VideoReading(question_first=True, captions=True).save(captioning)
    video = {"url": data_url(noise_mp4(10))}  # 10 frames, each new
    server = start_server(captioning, engine={"max_num_seqs": 2})
    try:
        written = ask(client(server), video)
    finally:
        server.stop()
    plain = ask(omni, video)
    assert written.choices[0].finish_reason in ("stop", "length")
    # the same frames and question, and after each frame a caption the model wrote: at least its end id
    assert written.usage.prompt_tokens >= plain.usage.prompt_tokens + 10


def test_a_model_trained_with_timestamps_a_character_a_token_gets_its_videos_stamped_so(omni_dir, monkeypatch):
    import asyncio

    from hepta.loading import load_image_codec, load_tokenizer
    from hepta.modality.video_reading import VideoReading
    from hepta.modality.video_span import StampForm
    from hepta.serve import image_parts
    from hepta.serve.image_fetch import ImageAccess
    from hepta.serve.schemas import ChatCompletionRequest
    from hepta.serve.video_parts import video_part

    parts = []  # every video part the prompt is built from
    monkeypatch.setattr(image_parts, "video_part", lambda *a, **k: parts.append(video_part(*a, **k)) or parts[-1])
    tokenizer = load_tokenizer(omni_dir)
    codec = load_image_codec(omni_dir, tokenizer)
    body = ChatCompletionRequest(model="micro", messages=[{"role": "user", "content": [
        {"type": "video_url", "video_url": {"url": data_url(noise_mp4(5))}},
        {"type": "text", "text": "How many digits appeared?"}]}])
    forms = tuple(StampForm)
    for form in forms:
        reading = VideoReading(stamps=form)
        asyncio.run(image_parts.chat_image_prompt(body, codec, tokenizer, ImageAccess(), max_len=CONTEXT,
                                                  reading=reading))
    assert tuple(part.stamps for part in parts) == forms
