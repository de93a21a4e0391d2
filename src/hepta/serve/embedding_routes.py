"""POST /v1/embeddings: pooled final hidden states, computed by the engine between decoding steps."""

from __future__ import annotations

import base64

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from hepta.infer.client import EngineDead
from hepta.serve.errors import APIError
from hepta.serve.schemas import EmbeddingRequest
from hepta.serve.state import ServerState

router = APIRouter()


@router.post("/v1/embeddings")
async def embeddings(body: EmbeddingRequest, request: Request):
    state: ServerState = request.app.state.hepta
    key, engine = state.gate(request, body.model)
    inputs = _embedding_inputs(body, state.tokenizer, engine.max_len)
    total = sum(len(ids) for ids in inputs)
    headers = state.admit(key, total)
    if body.dimensions is not None and body.dimensions > engine.limits.model_dim:
        raise APIError(400, f"dimensions can be at most {engine.limits.model_dim} for this model",
                       param="dimensions")
    try:
        vectors = await engine.embed(inputs, body.dimensions)
    except EngineDead as e:
        raise APIError(503, f"the engine stopped before the embeddings were computed ({e}); retry",
                       code="engine_restarting", headers={"retry-after": "5"}) from e
    await state.account(key, "embeddings", total, total, 0)
    data = [{"object": "embedding", "index": i,
             "embedding": _encode_vector(v, body.encoding_format)} for i, v in enumerate(vectors)]
    return JSONResponse({"object": "list", "data": data, "model": state.model_name,
                         "usage": {"prompt_tokens": total, "total_tokens": total}}, headers=headers)


def _embedding_inputs(body: EmbeddingRequest, tokenizer, max_len: int) -> list[list[int]]:
    raw = body.input
    if isinstance(raw, str):
        inputs = [tokenizer.encode(raw)]
    elif raw and all(isinstance(x, str) for x in raw):
        inputs = [tokenizer.encode(x) for x in raw]
    elif raw and all(isinstance(x, int) for x in raw):
        inputs = [list(raw)]
    else:
        inputs = [list(x) for x in raw]
    if not inputs or any(not ids for ids in inputs):
        raise APIError(400, "input must not be empty; send a string, strings, or token ids", param="input")
    for ids in inputs:
        if len(ids) > max_len:
            raise APIError(400, f"an input is {len(ids)} tokens but this model reads at most {max_len}; "
                           "split it", param="input", code="context_length_exceeded")
        if any(not 0 <= t < tokenizer.vocab_size for t in ids):
            raise APIError(400, f"token ids must be in 0..{tokenizer.vocab_size - 1}", param="input")
    return inputs


def _encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector.tolist()
