"""Kept prompt prefixes: a shared system prompt or a conversation's history is not prefilled again, and the answers
are the ones a full prefill gives."""

import sys
import threading
from pathlib import Path

import pytest
import torch

import hepta
from hepta.infer.engine import Engine, EngineConfig, generate, generate_many
from hepta.infer.request import Request
from hepta.infer.sampling import SamplingParams
from helpers import engine_model_and_tokenizer

GREEDY = SamplingParams(temperature=0)
SYSTEM = ("You are a careful assistant. Answer in one short paragraph, cite the posts you use, and say so when the "
          "posts do not answer the question. ")


@pytest.fixture(scope="module")
def model_and_tokenizer(corpus):
    return engine_model_and_tokenizer(corpus)


class Counted:
    """Counts the tokens the model's forwards run over, to tell a prefix that was reused from one prefilled again."""

    def __init__(self, model):
        self.model, self.tokens = model, 0
        self.original = model.hidden_states

        def hidden_states(ids_BT, *args, **kwargs):
            self.tokens += ids_BT.numel()
            return self.original(ids_BT, *args, **kwargs)

        model.hidden_states = hidden_states

    def restore(self):
        self.model.hidden_states = self.original


def run_engine(model, tokenizer, requests, **config):
    """(each answer's tokens and the log-probabilities of its top 5 at each step, tokens run through the model,
    the engine's prefix cache) for requests sent one after the other."""
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=4, **config)).start()
    counted = Counted(model)
    try:
        answers = [generate(engine, request)[0] for request in requests]
        return [trace(a) for a in answers], counted.tokens, engine.prefix
    finally:
        counted.restore()
        engine.stop()


def trace(choice):
    return choice.token_ids, torch.tensor([[value for _, value in step.top] for step in choice.logprobs])


def same_answers(got, expected) -> bool:
    """Same tokens, and the model's distribution at each step within float rounding (a cache row that is off in
    any way moves these, even where the greedy token survives it)."""
    return all(g[0] == e[0] and (g[1] - e[1]).abs().max() <= 1e-4 for g, e in zip(got, expected, strict=True))


def test_a_shared_system_prompt_is_prefilled_once_and_the_answers_do_not_change(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = [tokenizer.encode_prompt(SYSTEM + question) for question in ("What is trending?", "Who said it first?",
                                                                          "Summarise the posts about rain.")]
    shared = len(tokenizer.encode_prompt(SYSTEM))
    requests = lambda: [Request(ids, 12, GREEDY, logprobs=5) for ids in prompts]  # noqa: E731
    without, tokens_without, _ = run_engine(model, tokenizer, requests(), prefix_cache_bytes=0)
    with_cache, tokens_with, prefix = run_engine(model, tokenizer, requests())
    assert same_answers(with_cache, without)
    reused = prefix.hit_tokens
    assert reused >= 2 * (shared - prefix.block)  # the second and third prompts found the system prompt's blocks
    assert tokens_with == tokens_without - reused  # and those tokens never went through the model again


def test_the_next_turn_of_a_conversation_reuses_the_last_answer_too(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    first = tokenizer.encode_prompt(SYSTEM + "What is trending?")
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=2)).start()
    try:
        answer = generate(engine, Request(first, 40, GREEDY, logit_bias={i: -100.0 for i in tokenizer.stop_ids}))[0]
        history = first + answer.token_ids
        before = engine.prefix.hit_tokens
        generate(engine, Request(history + tokenizer.encode_prompt(" And why?"), 4, GREEDY))
        reused = engine.prefix.hit_tokens - before
    finally:
        engine.stop()
    # the cache held the prompt and all of the answer but its last token: whole blocks of that come back
    assert reused == (len(history) - 1) // 32 * 32 and reused > len(first)


def test_sliding_windows_and_sinks_continue_a_kept_prefix_exactly(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent.parent / "interop"))
    from test_hf_load import save_hf
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from hepta.loading import load_tokenizer

    save_hf("gpt_oss-window-4-yarn", tmp_path)  # windows of 4 tokens beside full layers, sinks
    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(160)}, unk_token="w0"))
    PreTrainedTokenizerFast(tokenizer_object=words, eos_token="w159").save_pretrained(tmp_path)
    model, tokenizer = hepta.load(tmp_path), load_tokenizer(tmp_path)
    generator = torch.Generator().manual_seed(0)
    system = torch.randint(0, 150, (70,), generator=generator).tolist()
    prompts = [system + torch.randint(0, 150, (n,), generator=generator).tolist() for n in (5, 9, 3)]
    requests = lambda: [Request(ids, 10, GREEDY, logit_bias={159: -100.0}, logprobs=5) for ids in prompts]  # noqa: E731
    without, _, _ = run_engine(model, tokenizer, requests(), prefix_cache_bytes=0)
    with_cache, _, prefix = run_engine(model, tokenizer, requests())
    assert prefix.hit_tokens == 2 * 64 and same_answers(with_cache, without)


def test_a_long_prompt_arriving_while_others_decode_starts_its_chunks_after_the_kept_prefix(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    history = tokenizer.encode_prompt(SYSTEM * 2 + "Earlier: the storm reached the coast.")
    assert len(history) > 64
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=3, prefill_chunk=16)).start()
    counted = Counted(model)
    try:
        generate(engine, Request(history, 2, GREEDY))  # kept
        started = threading.Event()
        long_answer = {}

        def on_event(event):
            started.set()

        streaming = Request(tokenizer.encode_prompt("import os\n"), 60, GREEDY, sink=on_event,
                            logit_bias={i: -100.0 for i in tokenizer.stop_ids})
        engine.submit(streaming)
        assert started.wait(30)
        tokens_before = counted.tokens
        long_answer = generate(engine, Request(history + tokenizer.encode_prompt(" Now?"), 6, GREEDY, logprobs=5))[0]
        long_tokens = counted.tokens - tokens_before
    finally:
        counted.restore()
        engine.stop()
    alone = generate_alone(model, tokenizer, history + tokenizer.encode_prompt(" Now?"), 6)
    assert same_answers([trace(long_answer)], [alone])
    # its own chunks covered only what was not kept (the streaming request's decode steps add one token each)
    kept = len(history) // 32 * 32
    assert long_tokens < len(history) + len(tokenizer.encode_prompt(" Now?")) - kept + 60


def generate_alone(model, tokenizer, ids, max_tokens):
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=1, prefix_cache_bytes=0)).start()
    try:
        return trace(generate(engine, Request(ids, max_tokens, GREEDY, logprobs=5))[0])
    finally:
        engine.stop()


def test_the_kept_prefixes_stay_within_their_budget_most_recent_first(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=2)).start()
    try:
        prefix = engine.prefix
        block_bytes = prefix.bytes_per_token() * prefix.block
    finally:
        engine.stop()
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=2, prefix_cache_bytes=4 * block_bytes)).start()
    try:
        prefix = engine.prefix
        assert prefix.capacity_blocks == 4
        a, b = (tokenizer.encode_prompt(text * 12) for text in ("alpha beta gamma. ", "rain and wind and sun. "))
        assert len(a) > 4 * 32 and len(b) > 4 * 32
        generate(engine, Request(a, 2, GREEDY))
        assert prefix.num_tokens <= 4 * 32
        generate(engine, Request(b, 2, GREEDY))  # b's blocks push a's out
        assert prefix.num_tokens <= 4 * 32
        assert len(prefix.lookup(b + [5])) == 4 and prefix.lookup(a + [5]) == []
    finally:
        engine.stop()


def test_batched_requests_sharing_a_prompt_get_their_solo_answers(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompts = [tokenizer.encode_prompt(SYSTEM + f"Question {i}: what happened?") for i in range(6)]
    solo = [generate_alone(model, tokenizer, ids, 8) for ids in prompts]
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=4)).start()
    try:
        generate(engine, Request(prompts[0], 1, GREEDY))  # the system prompt is kept
        together = generate_many(engine, [Request(ids, 8, GREEDY, logprobs=5) for ids in prompts])
        assert engine.prefix.hit_tokens > 0
    finally:
        engine.stop()
    assert same_answers([trace(choices[0]) for choices in together], solo)


def test_fresh_prompts_admitted_around_one_that_continues_a_kept_prefix_are_prefilled_in_their_own_slots(
        model_and_tokenizer):
    """Sorted by length, a prompt that continues a kept prefix can fall between two fresh ones of about its
    length; the fresh ones are not consecutive slots then, and each is prefilled where it sits."""
    model, tokenizer = model_and_tokenizer
    kept = tokenizer.encode_prompt(SYSTEM)
    other = tokenizer.encode_prompt("Rain, wind and sun over the hills; the river rose in the night. " * 8)
    hit = kept + tokenizer.encode(" ok")
    prompts = [other[:len(hit) - 1], hit, other[:len(hit) + 1]]  # fresh, a kept prefix continued, fresh
    solo = [generate_alone(model, tokenizer, ids, 6) for ids in prompts]
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=4)).start()
    try:
        generate(engine, Request(kept, 1, GREEDY))
        together = generate_many(engine, [Request(ids, 6, GREEDY, logprobs=5) for ids in prompts])
        assert engine.prefix.hit_tokens > 0
    finally:
        engine.stop()
    assert same_answers([trace(choices[0]) for choices in together], solo)


def test_models_with_linear_attention_keep_no_prefixes(tmp_path):
    sys.path.insert(0, str(Path(__file__).parent.parent / "interop"))
    from test_hf_load import save_hf

    from hepta.tokenizer import Tokenizer

    save_hf("qwen3_5_moe_text-3-linear-1-full", tmp_path)
    tokenizer = Tokenizer.train(["a b c d e f"] * 20, text_vocab_size=100)
    engine = Engine(hepta.load(tmp_path), tokenizer, EngineConfig(max_num_seqs=1))
    assert engine.prefix is None
