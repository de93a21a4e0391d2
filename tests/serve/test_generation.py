"""The body of a streamed answer cancels its engine requests however the stream ends."""

import asyncio
from collections import deque

from hepta.serve.generation import _sse_body


class _RecordingRun:
    def __init__(self):
        self.buffer = deque()
        self.cancelled = 0

    def cancel(self) -> None:
        self.cancelled += 1


def test_a_client_that_leaves_at_the_first_chunk_cancels_the_run():
    """The role chunk is written before the stream reads any engine event; a client gone during that
    write closes the body there, and the run must still be cancelled (it would decode on for nobody)."""
    async def chunks():
        yield "data: role\n\n"
        await asyncio.sleep(3600)  # the engine's events, which never come here
        yield "data: token\n\n"

    async def scenario():
        run = _RecordingRun()
        body = _sse_body(run, chunks())
        assert await body.__anext__() == "data: role\n\n"
        await body.aclose()  # what the server does when the client disconnects mid-write
        return run.cancelled

    assert asyncio.run(scenario()) == 1


def test_a_finished_stream_also_ends_its_run():
    async def chunks():
        yield "data: a\n\n"
        yield "data: [DONE]\n\n"

    async def scenario():
        run = _RecordingRun()
        written = [part async for part in _sse_body(run, chunks())]
        return written, run.cancelled

    written, cancelled = asyncio.run(scenario())
    assert "".join(written) == "data: a\n\ndata: [DONE]\n\n" and cancelled == 1
