"""One prompt through the engine, streamed: what `hepta generate` and the demo print."""

import threading

import pytest

import hepta
from hepta.errors import HeptaError
import hepta.infer.complete as complete_module
from hepta.infer.collect import Choice, GenerationFailed
from hepta.infer.complete import stream_completion
from hepta.infer.sampling import SamplingParams
from hepta.tokenizer import Tokenizer
from helpers import greedy_full_forward


@pytest.fixture(scope="module")
def model_and_tokenizer(corpus_texts_small):
    tokenizer = Tokenizer.train(corpus_texts_small, text_vocab_size=480)
    cfg = hepta.get_preset("tiny").with_changes({
        "vocab_size": 512, "dim": 64, "num_layers": 2, "attention.num_heads": 2, "attention.num_kv_heads": 1,
        "attention.head_dim": 32, "moe.num_experts": 4, "moe.expert_hidden_dim": 32, "max_seq_len": 96})
    return hepta.build_model(cfg, seed=0).eval(), tokenizer


@pytest.fixture(scope="module")
def corpus_texts_small(tmp_path_factory):
    from helpers import make_corpus

    folder = make_corpus(tmp_path_factory.mktemp("gen"))
    return [f.read_text() for f in sorted(folder.iterdir())]


def complete(model, tokenizer, prompt: str, max_tokens: int, sampling=SamplingParams(), stop=()):
    """(the finished completion, the deltas it streamed)."""
    result = Choice()
    deltas = list(stream_completion(model, tokenizer, prompt, max_tokens, sampling, stop=stop, result=result))
    return result, deltas


def engine_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "hepta-engine"]


def test_greedy_completion_is_deterministic_and_matches_a_full_forward_argmax(model_and_tokenizer):
    model, tok = model_and_tokenizer
    out, _ = complete(model, tok, "import json\n", 12, SamplingParams(temperature=0))
    again, _ = complete(model, tok, "import json\n", 12, SamplingParams(temperature=0))
    assert out.token_ids == again.token_ids and out.token_ids
    assert out.token_ids == greedy_full_forward(model, tok, tok.encode_prompt("import json\n"), 12)


def test_seed_reproduces_sampled_output(model_and_tokenizer):
    model, tok = model_and_tokenizer
    a, _ = complete(model, tok, "x = ", 16, SamplingParams(temperature=1.0, seed=7))
    b, _ = complete(model, tok, "x = ", 16, SamplingParams(temperature=1.0, seed=7))
    c, _ = complete(model, tok, "x = ", 16, SamplingParams(temperature=1.0, seed=8))
    assert a.token_ids == b.token_ids
    assert a.token_ids != c.token_ids


def test_streamed_deltas_add_up_to_the_text(model_and_tokenizer):
    model, tok = model_and_tokenizer
    result, deltas = complete(model, tok, "def ", 20, SamplingParams(seed=1))
    assert "".join(deltas) == result.text == tok.decode(result.token_ids)
    assert len(deltas) > 1 and result.finish_reason == "length" and len(result.token_ids) == 20


def test_stop_strings_end_generation_and_are_not_included(model_and_tokenizer):
    model, tok = model_and_tokenizer
    free, _ = complete(model, tok, "class A:\n", 40, SamplingParams(seed=3))
    stop = free.text[5:8]  # a string we know the model will produce
    assert stop
    stopped, _ = complete(model, tok, "class A:\n", 40, SamplingParams(seed=3), stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:free.text.find(stop)]
    assert stop not in stopped.text


def test_prompt_longer_than_the_context_is_refused_before_any_engine_is_built(model_and_tokenizer, monkeypatch):
    model, tok = model_and_tokenizer
    built = []

    class RecordingEngine(complete_module.Engine):
        def __init__(self, *args, **kwargs):
            built.append(self)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(complete_module, "Engine", RecordingEngine)
    with pytest.raises(HeptaError, match="context is 96"):
        stream_completion(model, tok, "word " * 400, 4)
    with pytest.raises(HeptaError, match=r"max_tokens \(--max-tokens of hepta generate\) is 0; ask for 1 token"):
        stream_completion(model, tok, "word", 0)
    assert built == []
    complete(model, tok, "word", 1)  # the spy sees the engine a valid request builds
    assert len(built) == 1


def test_max_tokens_stop_at_the_end_of_the_context(model_and_tokenizer):
    model, tok = model_and_tokenizer
    prompt = "word " * 22
    room = 96 - len(tok.encode_prompt(prompt))
    assert 0 < room < 50
    result, _ = complete(model, tok, prompt, 50, SamplingParams(seed=0))
    assert result.finish_reason == "length" and len(result.token_ids) == room


def test_generation_never_emits_structure_tokens(model_and_tokenizer):
    model, tok = model_and_tokenizer
    out, _ = complete(model, tok, "a", 60, SamplingParams(temperature=2.0, seed=0))
    assert all(i < tok.layout.text_vocab_size for i in out.token_ids)


def test_leaving_early_cancels_and_stops_the_engine(model_and_tokenizer):
    model, tok = model_and_tokenizer
    result = Choice()
    before = len(engine_threads())
    deltas = stream_completion(model, tok, "def ", 80, SamplingParams(seed=1), result=result)
    next(deltas)
    assert len(engine_threads()) == before + 1  # this run's engine is running
    deltas.close()  # what Ctrl-C or a closed pipe does to the caller's loop
    assert len(engine_threads()) == before and len(result.token_ids) < 80


def test_an_engine_error_is_raised_as_generation_failed(model_and_tokenizer, monkeypatch):
    model, tok = model_and_tokenizer

    def failing_step(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(complete_module.Engine, "_admit_and_prefill", failing_step)
    with pytest.raises(GenerationFailed, match="generation failed: .*boom"):
        complete(model, tok, "def ", 8)
