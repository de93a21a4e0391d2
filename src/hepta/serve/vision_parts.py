"""Chat messages with image_url and video_url parts -> the prompt of a model that reads them through a vision
encoder (Qwen3-VL-MoE): its own chat template, its placeholders grown to each image's and frame pair's size,
and the images and videos as patches for the engine. The same for input_audio parts and a model that hears
through an audio tower (Qwen3-Omni-MoE's thinker), each clip as log-mel features.

The parts are the same ones hepta's own multimodal models take, read the same way (`image_fetch.py`: data URLs,
and local files only inside the folders the server allows; `video_parts.py`: fps and max_frames, the length
limit read from the container before decoding) and refused with the same 400s. The folder's chat template
sees them as transformers' processors pass them, `{"type": "image"}`, `{"type": "video"}` and
`{"type": "audio"}`.
"""

from __future__ import annotations

import asyncio

from PIL import Image

from hepta.errors import HeptaError
from hepta.interop.qwen3_omni_audio import Qwen3OmniAudio
from hepta.interop.qwen3_vl_inputs import Qwen3VLPreprocessor, VisionItem
from hepta.modality.image_io import ImageInputError, open_image
from hepta.modality.video_io import MAX_VIDEO_SECONDS, VideoInputError, decode_video
from hepta.serve.audio_input import read_input_audio, read_wave
from hepta.serve.errors import APIError
from hepta.serve.image_fetch import ImageAccess
from hepta.serve.image_parts import read_images
from hepta.serve.schemas import ChatCompletionRequest
from hepta.serve.video_parts import VideoSource, read_video, video_source


def _image_item(data: bytes, param: str, preprocessor: Qwen3VLPreprocessor) -> VisionItem:
    try:
        return preprocessor.image(open_image(data))
    except ImageInputError as e:
        raise APIError(400, str(e), param=param, code="invalid_image") from e


def _video_item(source: VideoSource, data: bytes, preprocessor: Qwen3VLPreprocessor,
                max_seconds: float = MAX_VIDEO_SECONDS) -> VisionItem:
    try:
        video = decode_video(data, image_size=None, channels=3, fps=source.fps, max_frames=source.max_frames,
                             max_seconds=max_seconds)
    except VideoInputError as e:
        raise APIError(400, str(e), param=source.param, code="invalid_video") from e
    frames = [Image.fromarray((pixels.transpose(1, 2, 0) * 255).round().astype("uint8")) for pixels in video.pixels]
    return preprocessor.video(frames, video.times.tolist())


async def chat_vision_prompt(body: ChatCompletionRequest, preprocessor: Qwen3VLPreprocessor | Qwen3OmniAudio,
                             tokenizer, access: ImageAccess, context: str, max_len: int) -> tuple[list[int], list]:
    """The prompt ids of a chat holding images and videos (or audio clips), and those in prompt order."""
    if body.tools:
        raise APIError(400, "tools cannot be combined with image, video or audio parts on this server yet; send "
                       "them without tools", param="tools")
    hears = isinstance(preprocessor, Qwen3OmniAudio)
    readable = "text, and input_audio parts" if hears else "text, and image_url and video_url parts"
    # media: (param, url, None) for an image, (param, None, VideoSource) for a video, (param, bytes, "audio")
    messages, media = [], []
    for i, message in enumerate(body.messages):
        role = "system" if message.role == "developer" else message.role
        if isinstance(message.content, str):
            messages.append({"role": role, "content": message.content})
            continue
        parts = []
        for j, part in enumerate(message.content or []):
            param = f"messages[{i}].content[{j}]"
            if part.type == "text":
                parts.append({"type": "text", "text": part.text})
            elif part.type == "image_url" and role == "user" and not hears:
                parts.append({"type": "image"})
                media.append((param, part.image_url.get("url"), None))
            elif part.type == "video_url" and role == "user" and not hears:
                parts.append({"type": "video"})
                media.append((param, None, video_source(part.video_url, param, body.mm_processor_kwargs)))
            elif part.type == "input_audio" and role == "user" and hears:
                parts.append({"type": "audio"})
                media.append((param, read_input_audio(part.input_audio, param), "audio"))
            else:
                raise APIError(400, f"a {role} message cannot hold {part.type} parts; this model reads {readable} in "
                               "user turns", param=param)
        messages.append({"role": role, "content": parts})
    if context:
        if messages[0]["role"] == "system" and isinstance(messages[0]["content"], str):
            messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n\n{context}"}
        else:
            messages.insert(0, {"role": "system", "content": context})
    items = []
    for param, url, video in media:
        if video == "audio":
            wave = await asyncio.to_thread(read_wave, url, param, preprocessor.max_seconds(max_len))
            items.append(await asyncio.to_thread(preprocessor.clip, wave))
        elif video is None:
            (image,) = await read_images([(param, url)], access)
            items.append(await asyncio.to_thread(_image_item, image.data, param, preprocessor))
        else:
            data = await read_video(video, access)
            items.append(await asyncio.to_thread(_video_item, video, data, preprocessor))
    try:
        text = preprocessor.expand(tokenizer.format_chat(messages), items)
    except HeptaError as e:
        raise APIError(400, str(e), param="messages") from e
    ids = tokenizer.encode(text)
    if len(ids) >= max_len:
        raise APIError(400, f"the prompt is {len(ids)} tokens with its {len(items)} images, videos or clips, but this "
                       f"model's context length is {max_len} tokens; send smaller or fewer images, fewer video "
                       "frames (max_frames, fps), shorter clips or shorter text", param="messages",
                       code="context_length_exceeded")
    return ids, items
