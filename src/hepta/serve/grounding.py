"""xAI's `search_parameters`: posts found in the live store go into the prompt, their URLs come back as citations."""

from __future__ import annotations

from dataclasses import dataclass

from hepta.serve.errors import APIError
from hepta.serve.schemas import ChatCompletionRequest


@dataclass
class Grounding:
    context: str = ""  # found posts rendered for the system message
    citations: list[str] | None = None  # None: the response carries no citations field
    num_sources: int | None = None


async def ground(state, body: ChatCompletionRequest) -> Grounding:
    params = body.search_parameters
    if params is None or params.mode == "off":
        return Grounding()
    if state.live is None:
        if params.mode == "on":
            raise APIError(400, "search_parameters.mode 'on' needs live search, which this server was started "
                           "without; start it with --live-db PATH (a post store from `hepta live ingest`) or use "
                           "mode 'off'", param="search_parameters.mode", code="live_search_unavailable")
        return Grounding()
    return await state.live.ground(body)
