"""gpt-oss's Harmony answers split into reasoning and content, whole or streamed in any pieces."""

import pytest

from hepta.infer.harmony import HarmonyStream, split_harmony

ANSWER = ("<|channel|>analysis<|message|>The user greets; answer briefly.<|end|>"
          "<|start|>assistant<|channel|>final<|message|>Hello! How can I help?")


def streamed(text: str, piece: int) -> tuple[str, str, list[dict]]:
    stream = HarmonyStream()
    deltas = []
    for start in range(0, len(text), piece):
        deltas += stream.push(text[start:start + piece])
    deltas += stream.finish()
    return "".join(stream.reasoning), "".join(stream.content), deltas


def test_the_analysis_channel_is_reasoning_and_the_final_channel_is_content():
    assert split_harmony(ANSWER) == ("The user greets; answer briefly.", "Hello! How can I help?")
    # a commentary preamble is shown as content; the closing markers end messages wherever they come
    preamble = "<|channel|>commentary<|message|>Looking it up.<|end|><|start|>assistant<|channel|>final<|message|>Done.<|return|>"
    assert split_harmony(preamble) == ("", "Looking it up.Done.")


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
def test_any_split_of_the_stream_gives_the_same_answer_and_never_shows_a_marker(piece):
    reasoning, content, deltas = streamed(ANSWER, piece)
    assert (reasoning, content) == split_harmony(ANSWER)
    assert not any("<|" in value for delta in deltas for value in delta.values())
    fields = [next(iter(delta)) for delta in deltas]
    assert fields == sorted(fields, key=lambda f: f != "reasoning_content")  # reasoning first, then content


def test_text_outside_any_message_and_an_answer_cut_off_are_kept():
    assert split_harmony("plain words from an untrained model") == ("", "plain words from an untrained model")
    assert split_harmony("<|channel|>analysis<|message|>thinking, cut off") == ("thinking, cut off", "")
    assert split_harmony("<|channel|>analysis<|message|>a<|end|><|start|>assistant") == ("a", "")
