"""xAI's `search_parameters`: posts found in the live store go into the prompt, their URLs come back as citations."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from hepta.live.search import SearchParameterError, SearchParameters, format_context, parse_search_parameters, search
from hepta.serve.errors import APIError
from hepta.serve.schemas import ChatCompletionRequest

CONTEXT_HEADER = ("Recent posts from X, found for this question (newest knowledge available; cite a post as [n] "
                  "when you use it):")


@dataclass
class Grounding:
    context: str = ""  # found posts rendered for the system message
    citations: list[str] | None = None  # None: the response carries no citations field
    num_sources: int | None = None


def searched_question(body: ChatCompletionRequest) -> str:
    """The last user message's text: what the search looks for."""
    for message in reversed(body.messages):
        if message.role == "user":
            content = message.content
            if isinstance(content, list):
                return " ".join(part.text for part in content if part.type == "text")
            return content or ""
    return ""


async def ground(state, body: ChatCompletionRequest) -> Grounding:
    if body.search_parameters is None:
        return Grounding()
    try:
        params: SearchParameters = parse_search_parameters(body.search_parameters)
    except SearchParameterError as e:
        raise APIError(400, str(e), param="search_parameters") from e
    if params.mode == "off":
        return Grounding()
    if state.live is None:
        if params.mode == "on":
            raise APIError(400, "search_parameters.mode 'on' needs live search, which this server was started "
                           "without; start it with --live-db PATH (a post store from `hepta live ingest`) or use "
                           "mode 'off'", param="search_parameters.mode", code="live_search_unavailable")
        return Grounding()
    result = await asyncio.to_thread(search, state.live, searched_question(body), params)
    if not result.searched:
        return Grounding()
    context = f"{CONTEXT_HEADER}\n\n{format_context(result.posts)}" if result.posts else \
        "A search of recent posts on X found nothing on this question."
    return Grounding(context, result.citations if params.return_citations else None, result.num_sources_used)
