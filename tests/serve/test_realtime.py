"""/v1/realtime with the openai client's realtime connection: the session, audio in and committed,
its transcript, a spoken response streamed as audio deltas, and garbage or a vanished client
answered without harm to the connection or to other clients."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
import soxr
from conftest import client, start_server
from omni_fixture import make_omni_folder

from hepta.modality import espeak
from hepta.modality.audio_io import encode_pcm16

MAX_LEN = 160


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    folder = make_omni_folder(tmp_path_factory.mktemp("realtime") / "omni")
    server = start_server(folder, engine={"max_num_seqs": 4, "max_model_len": MAX_LEN})
    # the beta realtime client always dials wss:// unless told the WebSocket address
    yield client(server, websocket_base_url=server.url.replace("http://", "ws://") + "/v1")
    server.stop()


@pytest.fixture(scope="module")
def pcm16_24k():
    """"open the door" as the Realtime API sends audio: pcm16 at 24 kHz, base64."""
    wave = soxr.resample(espeak.synthesize("open the door"), 16000, 24000)
    return base64.b64encode(encode_pcm16(wave)).decode()


def until(connection, event_type: str) -> list:
    """Events up to and including the first of `event_type`."""
    events = []
    for event in connection:
        events.append(event)
        if event.type == event_type:
            return events
    raise AssertionError(f"the connection closed before {event_type}")


def test_a_spoken_turn_is_transcribed_and_answered_with_streamed_speech(omni, pcm16_24k):
    with omni.beta.realtime.connect(model="micro") as connection:
        assert connection.recv().type == "session.created"
        connection.session.update(session={"voice": "verse", "instructions": "be brief"})
        updated = until(connection, "session.updated")[-1]
        assert updated.session.voice == "verse"
        connection.input_audio_buffer.append(audio=pcm16_24k)
        connection.input_audio_buffer.commit()
        events = until(connection, "conversation.item.input_audio_transcription.completed")
        assert [e.type for e in events][:2] == ["input_audio_buffer.committed", "conversation.item.created"]
        transcript = events[-1].transcript
        connection.response.create()
        events = until(connection, "response.done")
        kinds = [e.type for e in events]
        assert kinds[0] == "response.created" and "response.audio.done" in kinds
        audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.audio.delta")
        assert len(audio) > 0 and len(audio) % 2 == 0
        said = "".join(e.delta for e in events if e.type == "response.audio_transcript.delta")
        assert said == transcript or not transcript.split()  # it says what it heard
        assert events[-1].response.status == "completed"


def test_garbage_gets_an_error_event_and_the_connection_stays_usable(omni):
    with omni.beta.realtime.connect(model="micro") as connection:
        assert connection.recv().type == "session.created"
        connection._connection.send("this is not json")
        error = until(connection, "error")[-1]
        assert "not a JSON object" in error.error.message
        connection.send({"type": "no.such.event"})
        assert "unknown event type 'no.such.event'" in until(connection, "error")[-1].error.message
        connection.input_audio_buffer.append(audio="***")
        assert "base64" in until(connection, "error")[-1].error.message
        connection.input_audio_buffer.commit()
        assert until(connection, "error")[-1].error.code == "input_audio_buffer_commit_empty"
        too_long = base64.b64encode(np.zeros(24000 * 10, dtype="<i2").tobytes()).decode()
        connection.input_audio_buffer.append(audio=too_long)
        assert "limit of 3.8 s" in until(connection, "error")[-1].error.message
        connection.session.update(session={"instructions": "still here"})
        assert until(connection, "session.updated")[-1].session.instructions == "still here"


def test_a_client_that_vanishes_mid_response_leaves_others_unharmed(omni):
    with omni.beta.realtime.connect(model="micro") as gone:
        gone.recv()
        gone.conversation.item.create(item={"type": "message", "role": "user",
                                            "content": [{"type": "input_text", "text": "turn on the lights"}]})
        gone.response.create()
        until(gone, "response.audio.delta")  # mid-utterance: then the connection closes
    with omni.realtime.connect(model="micro") as other:  # the GA client: its event names
        assert other.recv().type == "session.created"
        other.send({"type": "conversation.item.create", "item": {
            "type": "message", "role": "user", "content": [{"type": "input_text", "text": "stop"}]}})
        other.send({"type": "response.create"})
        events = until(other, "response.done")
        assert any(e.type == "response.output_audio.delta" for e in events)
        assert events[-1].response.status == "completed"
