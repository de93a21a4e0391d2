"""POST /v1/images/generations and /v1/images/edits: the model draws, n choices, PNGs back.

The prompt is a user turn (an edit's images first, then its text, as the model was trained)
and the assistant turn is opened with <|image_start|>, so the engine, which keeps spans well
formed, writes exactly one image per choice in `span_length - 1` tokens. Images come back at
the model's native size, or enlarged with nearest neighbour to 256, 512 or 1024 pixels a side.
"""

from __future__ import annotations

import asyncio
import base64

import torch

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from hepta.infer.request import Request as EngineRequest
from hepta.infer.sampling import SamplingParams
from hepta.modality.chat import ImageCodes, Turn, encode_chat
from hepta.modality.codec import ImageCodec
from hepta.modality.image_io import encode_png, png_data_url
from hepta.serve import responses as R
from hepta.serve.errors import APIError
from hepta.serve.generation import SEED_SPACE, _check, collect_choices, _Run
from hepta.serve.image_parts import ImageSource, image_codes, read_images
from hepta.serve.schemas import IMAGE_SIZES, ImageEditRequest, ImageGenerationRequest
from hepta.serve.state import ServerState

router = APIRouter()
DRAW_TEMPERATURE = 1.0  # the model's own distribution: n choices are n different drawings


def _codec(state: ServerState) -> ImageCodec:
    if state.codec is None:
        raise APIError(400, f"the model '{state.model_name}' does not write images (its folder has no image "
                       "tokenizer); serve a model trained with images", param="model", code="model_not_supported")
    return state.codec


def _side(size: str | None, codec: ImageCodec) -> int | None:
    """The side to enlarge to (None: native) for OpenAI's `size`; a 400 listing the sizes otherwise."""
    native = f"{codec.image_size}x{codec.image_size}"
    if size in (None, "auto", native):
        return None
    if size in IMAGE_SIZES:
        return int(size.split("x")[0])
    raise APIError(400, f"size {size!r} is not supported; use one of auto, {native} (native), "
                   f"{', '.join(IMAGE_SIZES)} (nearest-neighbour enlargements)", param="size")


def _admit(state: ServerState, http: Request, body: ImageGenerationRequest):
    """Key, model name, readiness, then that the model draws: before any image of the request is read."""
    key, engine = state.gate(http, body.model or state.model_name)
    codec = _codec(state)
    return key, engine, codec, _side(body.size, codec)


async def _draw(state: ServerState, http: Request, body: ImageGenerationRequest, images: list[ImageSource],
                endpoint: str, admitted) -> JSONResponse:
    key, engine, codec, side = admitted
    codes = await asyncio.to_thread(image_codes, images, codec)
    turn = Turn("user", (*(ImageCodes(c) for c in codes), body.prompt))
    prompt_ids = encode_chat([turn], state.tokenizer, codec.vocab)[0] + [codec.vocab.start_id]
    max_tokens = codec.vocab.span_length - 1  # the rest of the span the prompt opened
    _check(engine, len(prompt_ids), max_tokens, body.n, "prompt")
    estimated = len(prompt_ids) + max_tokens * body.n
    headers = state.admit(key, estimated)
    seed = None if body.seed is None else body.seed % SEED_SPACE
    request = EngineRequest(prompt_ids, max_tokens, SamplingParams(temperature=DRAW_TEMPERATURE, seed=seed), n=body.n)
    run = _Run(engine, [request], http)
    await run.submit()
    choices = await collect_choices(run)
    grids = [codec.vocab.find_spans(codec.open_span(prompt_ids) + c.token_ids) for c in choices]
    if not all(grids):
        raise APIError(500, "the model stopped before finishing an image", type="server_error")
    pixels = await asyncio.to_thread(codec.pixels, torch.stack([g[0] for g in grids]))
    pngs = [encode_png(p, side=side) for p in pixels]
    await state.account(key, endpoint, estimated, len(prompt_ids), sum(len(c.token_ids) for c in choices))
    as_url = body.response_format == "url"
    data = [{"url": png_data_url(png)} if as_url else {"b64_json": base64.b64encode(png).decode("ascii")}
            for png in pngs]
    return JSONResponse({"created": R.now(), "data": data}, headers=headers)


@router.post("/v1/images/generations")
async def generations(body: ImageGenerationRequest, http: Request):
    state: ServerState = http.app.state.hepta
    return await _draw(state, http, body, [], "images.generations", _admit(state, http, body))


def _inline_refs(node, defs: dict):
    """A JSON schema with its `$defs` references replaced by their definitions (a request body in the
    OpenAPI document cannot point into a `$defs` of its own)."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _inline_refs(defs[node["$ref"].rsplit("/", 1)[-1]], defs)
        return {key: _inline_refs(value, defs) for key, value in node.items() if key != "$defs"}
    return [_inline_refs(value, defs) for value in node] if isinstance(node, list) else node


def _edit_body_schema() -> dict:
    """The two bodies /v1/images/edits reads, for the OpenAPI document (the route parses them itself)."""
    json_schema = ImageEditRequest.model_json_schema()
    form = ImageGenerationRequest.model_json_schema()
    form["properties"]["image"] = {"type": "string", "format": "binary"}
    form["required"] = [*form.get("required", []), "image"]
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": _inline_refs(json_schema, json_schema.get("$defs", {}))},
        "multipart/form-data": {"schema": form}}}}


@router.post("/v1/images/edits", openapi_extra=_edit_body_schema())
async def edits(http: Request):
    """OpenAI's multipart form (`image` file, or several as `image[]`) or xAI's JSON (`image: {"url"}`)."""
    state: ServerState = http.app.state.hepta
    state.authorize(http)  # a caller without a key uploads nothing (the gate checks the rest once the body is read)
    if http.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await http.form()
        if form.get("mask") is not None:
            raise APIError(400, "masks are not supported; send the image and a prompt only", param="mask")
        files = [(name, f) for name in ("image", "image[]") for f in form.getlist(name)]
        if not files or not all(isinstance(f, UploadFile) for _, f in files):
            raise APIError(400, "'image' is a required file; send the image to edit as a file field", param="image")
        body = _validated(ImageGenerationRequest, {k: v for k, v in form.items() if not isinstance(v, UploadFile)})
        admitted = _admit(state, http, body)
        images = [ImageSource(param, await f.read()) for param, (_, f) in zip(_image_params(len(files)), files)]
    else:
        try:
            data = await http.json()
        except ValueError:
            raise APIError(400, "the request body is not valid JSON; send a JSON object or a multipart form") from None
        body = _validated(ImageEditRequest, data)
        refs = body.image if isinstance(body.image, list) else [body.image]
        admitted = _admit(state, http, body)
        images = await read_images([(p, ref.url) for p, ref in zip(_image_params(len(refs)), refs)],
                                   state.image_access)
    return await _draw(state, http, body, images, "images.edits", admitted)


def _image_params(count: int) -> list[str]:
    return ["image"] if count == 1 else [f"image[{i}]" for i in range(count)]


def _validated(model, data):
    """`data` as `model`, or the same 400 FastAPI gives for a JSON body that does not fit."""
    if not isinstance(data, dict):
        raise APIError(400, "the request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise RequestValidationError(e.errors()) from None
