"""Chat messages with image_url, input_audio and video_url parts -> prompt ids, in `encode_chat`'s layout.

Only requests that hold images or audio come here; text-only chats keep `prompts.chat_prompt_ids`,
whose `format_chat` text is the same layout. Reading, decoding and tokenizing the images, clips and videos
runs on a worker thread, so a large batch of them does not hold up the event loop and the streams
on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass

import numpy as np

from hepta.errors import HeptaError
from hepta.infer.caption_writer import caption_slots
from hepta.modality.audio_codec import AudioCodec
from hepta.modality.chat import AudioCodes, ImageCodes, Turn, encode_chat, video_vocab
from hepta.modality.codec import ImageCodec
from hepta.modality.image_io import ImageInputError, decode_image
from hepta.modality.video_reading import VideoReading
from hepta.serve.audio_input import AudioClip, audio_codes, read_input_audio
from hepta.serve.errors import APIError
from hepta.serve.image_fetch import ImageAccess
from hepta.serve.schemas import ChatCompletionRequest
from hepta.serve.video_parts import VideoSource, read_video, video_part, video_source

IMAGE_ROLES = ("user", "assistant")


MEDIA_PARTS = ("image_url", "input_audio", "video_url")


def has_media_parts(body: ChatCompletionRequest) -> bool:
    return any(isinstance(m.content, list) and any(p.type in MEDIA_PARTS for p in m.content) for m in body.messages)


@dataclass(frozen=True)
class ImageSource:
    param: str  # where the image stands in the request, e.g. "messages[0].content[1]"
    data: bytes


async def read_images(sources: list[tuple[str, str]], access: ImageAccess) -> list[ImageSource]:
    """(param, url) pairs -> the files' bytes; a 400 naming the part that cannot be read."""
    out = []
    for param, url in sources:
        try:
            out.append(ImageSource(param, await access.read(url)))
        except ImageInputError as e:
            raise APIError(400, str(e), param=param, code="invalid_image") from e
    return out


def image_codes(images: list[ImageSource], codec: ImageCodec) -> list:
    """Image files -> code grids [g, g], one per image (blocking: run it on a worker thread)."""
    pixels = []
    for image in images:
        try:
            pixels.append(decode_image(image.data, codec.image_size, codec.channels))
        except ImageInputError as e:
            raise APIError(400, str(e), param=image.param, code="invalid_image") from e
    return list(codec.codes(np.stack(pixels))) if pixels else []


async def chat_image_prompt(body: ChatCompletionRequest, codec: ImageCodec | None, tokenizer, access: ImageAccess,
                            context: str = "", audio: AudioCodec | None = None,
                            max_audio_seconds: float | None = None, max_len: int = 0,
                            reading: VideoReading = VideoReading()) -> tuple[list[int], int, list[int]]:
    """The prompt ids of a chat holding images, audio clips or videos, how many images and video
    frames it holds, and where the model is to write its frame captions (`reading`: a model trained
    to caption as it reads gets an empty caption after each frame, for infer/caption_writer.py, and
    one trained with the question first gets a user turn's text before its videos); `context` (found
    posts) joins the system turn as in the text path."""
    if body.tools:
        raise APIError(400, "tools cannot be combined with image, audio or video parts on this server yet; send "
                       "them without tools", param="tools")
    # layout: per message, its parts as text, the index of an image, a clip, or a video
    sources, layout, clips = [], [], []
    for i, message in enumerate(body.messages):
        role = "system" if message.role == "developer" else message.role
        parts: list = []
        if isinstance(message.content, str):
            parts.append(message.content)
        for j, part in enumerate(message.content if isinstance(message.content, list) else []):
            param = f"messages[{i}].content[{j}]"
            if part.type == "text":
                parts.append(part.text)
            elif part.type == "image_url" and role in IMAGE_ROLES and codec is not None:
                parts.append(len(sources))
                sources.append((param, part.image_url.get("url")))
            elif part.type == "input_audio" and role == "user" and audio is not None:
                clip = AudioClip(param, read_input_audio(part.input_audio, param))
                parts.append(clip)
                clips.append(clip)
            elif part.type == "video_url" and role == "user" and codec is not None:
                parts.append(video_source(part.video_url, param, body.mm_processor_kwargs))
            else:
                raise APIError(400, f"a {role} message cannot hold {part.type} parts; this model reads "
                               f"{_readable(codec, audio)}", param=param)
        layout.append((role, parts))
    images = await read_images(sources, access)
    codes = await asyncio.to_thread(image_codes, images, codec) if images else []
    heard = await asyncio.to_thread(audio_codes, clips, audio, max_audio_seconds) if clips else {}
    videos = {}
    for source in (p for _, parts in layout for p in parts if isinstance(p, VideoSource)):
        data = await read_video(source, access)
        videos[id(source)] = await asyncio.to_thread(video_part, source, data, codec, tokenizer, max_len,
                                                     reading=reading)
    if reading.captions:
        videos = {k: dataclasses.replace(v, captions=("",) * len(v.times)) for k, v in videos.items()}
    if reading.question_first:
        layout = [(role, _question_first(parts)) for role, parts in layout]
    turns = [Turn(role, tuple(ImageCodes(codes[p]) if isinstance(p, int) else
                              AudioCodes(heard[id(p)]) if isinstance(p, AudioClip) else
                              videos[id(p)] if isinstance(p, VideoSource) else p for p in parts))
             for role, parts in layout]
    if context:
        if turns[0].role == "system":
            turns[0] = Turn("system", (*turns[0].parts, f"\n\n{context}"))
        else:
            turns.insert(0, Turn("system", (context,)))
    try:
        ids, marked = encode_chat(turns, tokenizer, codec.vocab if codec else None,
                                  audio=audio.vocab if audio else None)
    except HeptaError as e:
        raise APIError(400, str(e), param="messages") from e
    slots = caption_slots(ids, marked, video_vocab(tokenizer, codec.vocab.grid)) if reading.captions and videos else []
    return ids, len(images) + sum(len(v.frames) for v in videos.values()), slots


def _question_first(parts: list) -> list:
    """A turn's text before its videos, each kept in its order, where the turn holds a video."""
    if not any(isinstance(p, VideoSource) for p in parts):
        return parts
    return [p for p in parts if isinstance(p, str)] + [p for p in parts if not isinstance(p, str)]


def _readable(codec: ImageCodec | None, audio: AudioCodec | None) -> str:
    kinds = ["text"] + (["image_url (user and assistant turns)", "video_url (user turns)"] if codec else []) + \
        (["input_audio (user turns)"] if audio else [])
    return " and ".join(kinds) + " parts"


def check_image_context(prompt_tokens: int, num_images: int, codec: ImageCodec, max_len: int) -> None:
    """A 400 naming the context length when the images and video frames leave no room to answer."""
    if num_images and prompt_tokens >= max_len:
        raise APIError(400, f"the prompt is {prompt_tokens} tokens with its {num_images} images and video frames "
                       f"({codec.vocab.span_length} tokens or more each), but this model's context length is "
                       f"{max_len} tokens; send fewer images, fewer video frames (max_frames) or shorter text",
                       param="messages", code="context_length_exceeded")
