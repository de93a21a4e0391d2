"""The continuous-batching engine gives each request what it would get alone, within a bounded memory."""

import threading
import time

import pytest
import torch

from hepta.errors import HeptaError
from hepta.infer.engine import ContextLengthExceeded, Engine, EngineConfig, QueueFull, generate, generate_many
from hepta.infer.request import Request
from hepta.infer.sampling import SamplingParams
from hepta.scale.flops import matmul_params
from helpers import engine_model_and_tokenizer, greedy_full_forward

GREEDY = SamplingParams(temperature=0)


def settles(condition, timeout=10.0) -> bool:
    """The engine frees slots just after sending a choice's last event: wait for it."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


@pytest.fixture(scope="module")
def model_and_tokenizer(corpus):
    return engine_model_and_tokenizer(corpus)


@pytest.fixture
def engine(model_and_tokenizer):
    engine = Engine(*model_and_tokenizer, EngineConfig(max_num_seqs=6)).start()
    yield engine
    engine.stop()


def test_greedy_answer_equals_a_full_forward_per_token(engine, model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    prompt_ids = tokenizer.encode_prompt("import json\n")
    expected = greedy_full_forward(model, tokenizer, prompt_ids, max_tokens=24)
    got = generate(engine, Request(prompt_ids, 24, GREEDY))[0]
    assert len(expected) == 24 and got.token_ids == expected and got.text == tokenizer.decode(expected)


def test_requests_joining_and_leaving_the_batch_get_their_solo_answers(engine, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    prompts = [f"def f{i}(x):\n    return {'x' * (i + 1)}\n" for i in range(9)]  # more requests than slots
    shapes = [(tokenizer.encode_prompt(p), 5 + 3 * i, SamplingParams(temperature=0.9, seed=i))
              for i, p in enumerate(prompts)]
    solo = [generate(engine, Request(ids, n, params))[0] for ids, n, params in shapes]
    together = [None] * len(shapes)

    def run(i):
        time.sleep(0.002 * i)  # staggered: they arrive while others are decoding
        ids, n, params = shapes[i]
        together[i] = generate(engine, Request(ids, n, params))[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(shapes))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [c.token_ids for c in together] == [c.token_ids for c in solo]
    assert settles(lambda: engine.kv_usage == 0 and engine.num_requests_running == 0)


def test_offline_batch_runs_more_requests_than_slots_and_queue_hold_in_order(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=2, max_queue=3)).start()
    try:
        shapes = [(tokenizer.encode_prompt(f"def g{i}():"), 4 + i % 3, SamplingParams(temperature=0.8, seed=i))
                  for i in range(11)]  # 11 requests through 2 slots and a queue of 3: none may be refused
        solo = [generate(engine, Request(ids, n, params))[0].token_ids for ids, n, params in shapes]
        finished = []
        batch = generate_many(engine, [Request(ids, n, params) for ids, n, params in shapes], on_done=finished.append)
    finally:
        engine.stop()
    assert [choices[0].token_ids for choices in batch] == solo
    assert sorted(finished) == list(range(11))


def test_n_choices_share_a_prompt_and_differ(engine, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    choices = generate(engine, Request(tokenizer.encode("x = "), 12, SamplingParams(seed=5), n=4))
    assert len({tuple(c.token_ids) for c in choices}) == 4
    again = generate(engine, Request(tokenizer.encode("x = "), 12, SamplingParams(seed=5), n=4))
    assert [c.token_ids for c in again] == [c.token_ids for c in choices]


def test_penalties_and_logit_bias(engine, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    ids = tokenizer.encode("import os\n")
    plain = generate(engine, Request(ids, 40, GREEDY))[0].token_ids
    penalised = generate(engine, Request(ids, 40, SamplingParams(temperature=0, frequency_penalty=2.0)))[0].token_ids
    assert max(penalised.count(t) for t in set(penalised)) < max(plain.count(t) for t in set(plain))
    forced = generate(engine, Request(ids, 6, GREEDY, logit_bias={77: 100.0}))[0].token_ids
    assert forced == [77] * 6


def test_logprobs_and_stop_strings(engine, model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    ids = tokenizer.encode("def ")
    full = generate(engine, Request(ids, 30, GREEDY, logprobs=3))[0]
    assert len(full.logprobs) == 30 and all(lp.top[0][0] == lp.token_id for lp in full.logprobs)
    stop = full.text[10:13]
    cut = generate(engine, Request(ids, 30, GREEDY, stop=(stop,)))[0]
    assert cut.text == full.text[:full.text.index(stop)] and cut.finish_reason == "stop"


def test_cancelling_frees_the_slot_for_the_next_request(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=1)).start()
    try:
        events = []
        long = Request(tokenizer.encode("x"), 250, GREEDY, sink=events.append)
        engine.submit(long)
        while not events:
            time.sleep(0.001)
        long.cancel()
        short = generate(engine, Request(tokenizer.encode("y"), 3, GREEDY), timeout=30)[0]
        assert len(short.token_ids) == 3 and events[-1].finish_reason == "cancelled"
        assert len(events) < 250 and settles(lambda: engine.kv_usage == 0)
    finally:
        engine.stop()


def test_memory_is_bounded_and_excess_requests_are_refused(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    slot_bytes = model.new_slot_cache(1, 256, device="meta").num_bytes()
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=64, kv_cache_bytes=3 * slot_bytes, max_queue=2))
    assert engine.num_slots == 3 and engine.cache.num_bytes() == 3 * slot_bytes
    # not started: nothing leaves the queue, so the third waiting request is refused
    engine.submit(Request([1], 5))
    engine.submit(Request([1], 5))
    with pytest.raises(QueueFull):
        engine.submit(Request([1], 5))
    with pytest.raises(ContextLengthExceeded, match="maximum context length is 256"):
        engine.check(200, 100)
    with pytest.raises(HeptaError, match="lower n"):
        engine.check(1, 1, n=4)
    with pytest.raises(HeptaError, match="holds no sequence"):
        Engine(model, tokenizer, EngineConfig(kv_cache_bytes=slot_bytes // 2))


def test_every_request_ends_once_when_clients_resubmit_as_the_batch_finishes(model_and_tokenizer):
    """Sixteen clients of two requests each, the second sent from the first one's last event (on the engine
    thread, mid-step), so it is admitted while the rest of the batch is finishing; answers end at the first
    token (EOS by logit bias, or max_tokens=1) or at many different decode steps, which moves slots."""
    model, tokenizer = model_and_tokenizer
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=32))
    eos = min(engine.end_ids)
    finishes: dict[tuple[int, int], list[str]] = {}
    all_done = threading.Event()

    def request(client: int, turn: int) -> Request:
        kind = (client + turn) % 4
        bias = {eos: 100.0} if kind == 0 else None
        max_tokens = 1 if kind == 1 else 2 + (client * 5 + turn * 3) % 20
        return Request(tokenizer.encode(f"def f{client}(x):"), max_tokens, GREEDY, logit_bias=bias,
                       sink=lambda event: on_event(client, turn, event))

    def on_event(client: int, turn: int, event) -> None:
        if not event.finish_reason:
            return
        finishes.setdefault((client, turn), []).append(event.finish_reason)
        if turn == 0:
            engine.submit(request(client, 1))
        if len(finishes) == 32:
            all_done.set()

    for client in range(16):
        engine.submit(request(client, 0))
    engine.start()
    try:
        assert all_done.wait(30), f"{32 - len(finishes)} of 32 requests never finished"
        assert all(len(reasons) == 1 for reasons in finishes.values()), finishes
        assert {reasons[0] for (client, turn), reasons in finishes.items() if (client + turn) % 4 == 0} == {"stop"}
        assert settles(lambda: engine.num_requests_running == 0 and engine.kv_usage == 0 and engine.num_waiting == 0)
    finally:
        engine.stop()


@pytest.mark.parametrize("fault", ["building a sequence", "finishing a choice's text"])
def test_a_failing_step_ends_every_open_request_with_an_error_and_the_engine_serves_on(model_and_tokenizer,
                                                                                       monkeypatch, fault):
    """Whatever raises inside a step, no request is left without its final event: the ones admitted
    but not yet in a slot, and the one whose last event was being built, end with the step's error."""
    from hepta.infer import engine as engine_module

    model, tokenizer = model_and_tokenizer
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=8))
    poison = tokenizer.encode("def poison():")
    if fault == "building a sequence":
        real_init = engine_module._Sequence.__init__

        def init(self, request, *args):
            if request.prompt_ids == poison:
                raise RuntimeError("injected")
            real_init(self, request, *args)
        monkeypatch.setattr(engine_module._Sequence, "__init__", init)
    else:
        real_finish = engine_module.StreamingText.finish

        def finish(self, token_ids):
            if self.poisoned:
                raise RuntimeError("injected")
            return real_finish(self, token_ids)
        monkeypatch.setattr(engine_module.StreamingText, "finish", finish)
        monkeypatch.setattr(engine_module.StreamingText, "poisoned", False, raising=False)
        real_seq_init = engine_module._Sequence.__init__

        def seq_init(self, request, *args):
            real_seq_init(self, request, *args)
            self.text.poisoned = request.prompt_ids == poison
        monkeypatch.setattr(engine_module._Sequence, "__init__", seq_init)

    finals: dict[int, list] = {}
    done = threading.Event()
    prompts = [tokenizer.encode(f"def f{i}(x):") for i in range(3)] + [poison] + \
              [tokenizer.encode(f"class C{i}:") for i in range(3)]

    def sink_for(number: int):
        def sink(event):
            if event.finish_reason:
                finals.setdefault(number, []).append(event)
                if len(finals) == len(prompts):
                    done.set()
        return sink

    for number, ids in enumerate(prompts):
        engine.submit(Request(ids, 4, GREEDY, n=2 if number == 5 else 1, sink=sink_for(number)))
    engine.start()
    try:
        assert done.wait(30), f"{len(prompts) - len(finals)} of {len(prompts)} requests never ended"
        assert settles(lambda: engine.num_requests_running == 0 and engine.num_waiting == 0)
        assert len(finals[5]) == 2 and all(len(finals[n]) == 1 for n in finals if n != 5)
        assert any(event.error == "RuntimeError: injected" for event in finals[3])
        # served on: a later request completes normally
        choices = generate(engine, Request(tokenizer.encode("def g():"), 3, GREEDY), timeout=30)
        assert choices[0].finish_reason in ("stop", "length")
    finally:
        engine.stop()


def test_a_stopped_engine_refuses_new_work_instead_of_never_answering(model_and_tokenizer):
    from hepta.infer.engine import EngineStopped

    model, tokenizer = model_and_tokenizer
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=2)).start()
    engine.stop()
    with pytest.raises(EngineStopped, match="has stopped"):
        generate(engine, Request(tokenizer.encode("def f():"), 3, GREEDY), timeout=5)
    with pytest.raises(EngineStopped, match="has stopped"):
        engine.run_exclusive(lambda: 1)


def test_model_work_queued_when_the_engine_stops_fails_instead_of_staying_pending(model_and_tokenizer):
    from hepta.infer.engine import EngineStopped

    model, tokenizer = model_and_tokenizer
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=2))  # not started: jobs stay queued
    future = engine.run_exclusive(lambda: 1)
    engine._stopping = True  # as stop() leaves it, then the loop's exit runs
    engine._loop()
    with pytest.raises(EngineStopped, match="before this work ran"):
        future.result(timeout=5)


@pytest.mark.parametrize("packed", [True, False])
def test_a_long_prompt_is_prefilled_in_chunks_between_the_others_steps_with_the_same_answers(model_and_tokenizer,
                                                                                            packed):
    import torch

    model, tokenizer = model_and_tokenizer
    short = tokenizer.encode_prompt("import os\n")
    long = torch.randint(0, 480, (150,), generator=torch.Generator().manual_seed(3)).tolist()
    whole = Engine(model, tokenizer, EngineConfig(max_num_seqs=4, prefill_chunk=None)).start()
    try:
        expected = [generate(whole, Request(ids, n, GREEDY))[0].token_ids for ids, n in ((short, 60), (long, 12))]
    finally:
        whole.stop()
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=4, prefill_chunk=16, pack_prefill=packed)).start()
    events = []  # (which, number of tokens so far), in the order the engine sent them
    try:
        first = engine.submit(Request(short, 60, GREEDY, sink=lambda e: events.append(("short", e))))
        assert settles(lambda: len(events) >= 2)  # the short one decodes ...
        second = engine.submit(Request(long, 12, GREEDY, sink=lambda e: events.append(("long", e))))
        assert settles(lambda: sum(1 for _, e in events if e.finish_reason) == 2, timeout=60)
    finally:
        engine.stop()
    tokens = {name: [t for which, e in events if which == name for t in e.token_ids] for name in ("short", "long")}
    assert [tokens["short"], tokens["long"]] == expected  # chunking changes no answer
    order = [which for which, _ in events]
    first_long = order.index("long")
    # ... and keeps decoding while the 150-token prompt goes in 16 tokens a step (10 chunks, one per step)
    assert order[:first_long].count("short") >= 2 + 8
    assert first.id != second.id


def test_a_prompt_continued_a_chunk_at_a_time_sees_what_one_forward_sees():
    import torch

    model = packed_test_model()
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(0))
    cache = model.new_slot_cache(2, 64)
    with torch.no_grad():
        full = model(ids)
        cache.set_window(1, 1, prompt_lengths=torch.tensor([13]))
        pieces = [model(ids[:, :13], cache=cache)]
        for start, end in ((13, 20), (20, 39), (39, 40)):
            cache.set_extend(1, end - start)
            pieces.append(model(ids[:, start:end], cache=cache))
    assert (torch.cat(pieces, dim=1) - full).abs().max() <= 1e-5
    assert int(cache.lengths[1]) == 40


def packed_test_model():
    import hepta

    cfg = hepta.get_preset("tiny").with_changes({  # sliding windows and sinks too
        "vocab_size": 128, "dim": 64, "num_layers": 2, "attention.num_heads": 4, "attention.num_kv_heads": 2,
        "attention.head_dim": 16, "moe.num_experts": 4, "moe.expert_hidden_dim": 32, "max_seq_len": 64,
        "attention.sliding_window": 5, "attention.sliding_window_layers": (0,), "attention.sinks": True,
        "attention.qk_norm": False})
    model = hepta.build_model(cfg, seed=1).eval()
    for layer in model.layers:
        torch.nn.init.normal_(layer.attn.sinks)
    return model


@pytest.mark.parametrize("chunk_from", [0, 11])
def test_a_packed_forward_gives_each_part_what_its_own_forward_gives(chunk_from):
    """Three running slots decoding one token each and a fourth slot taking a chunk of 9 tokens (its first, or after
    11 tokens it holds), packed into one forward: the same logits and cache as a decode step and a chunk apart."""
    import torch

    model = packed_test_model()
    generator = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, 128, (3, 7), generator=generator)
    chunk = torch.randint(0, 128, (1, chunk_from + 9), generator=generator)
    steps = torch.randint(0, 128, (3, 1), generator=generator)
    caches = []
    for _ in range(2):  # the same state in two caches: the running slots, and the fourth slot's first tokens
        cache = model.new_slot_cache(4, 64)
        with torch.no_grad():
            cache.set_window(0, 3, prompt_lengths=torch.tensor([7, 4, 6]))
            model(prompts, cache=cache)
            if chunk_from:
                cache.set_window(3, 1, prompt_lengths=torch.tensor([chunk_from]))
                model(chunk[:, :chunk_from], cache=cache)
        caches.append(cache)
    apart, packed = caches
    with torch.no_grad():
        apart.set_window(0, 3)
        decoded = model(steps, cache=apart)[:, 0]
        if chunk_from:
            apart.set_extend(3, 9)
        else:
            apart.set_window(3, 1, prompt_lengths=torch.tensor([9]))
        chunked = model(chunk[:, chunk_from:], cache=apart)[0]
        packed.set_packed(3, [(3, 9)])
        both = model(torch.cat([steps[:, 0], chunk[0, chunk_from:]])[None], cache=packed)[0]
    assert (both[:3] - decoded).abs().max() <= 1e-5 and (both[3:] - chunked).abs().max() <= 1e-5
    assert packed.lengths.tolist() == apart.lengths.tolist() == [8, 5, 7, chunk_from + 9]
    for a, b in zip(apart.buffers, packed.buffers):
        assert (a - b).abs().max() <= 1e-5


def test_a_long_prompt_cancelled_while_it_is_prefilled_in_chunks_frees_its_slot(model_and_tokenizer):
    import torch

    model, tokenizer = model_and_tokenizer
    long = torch.randint(0, 480, (240,), generator=torch.Generator().manual_seed(4)).tolist()
    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=2, prefill_chunk=4)).start()
    ended = []
    try:
        engine.submit(Request(tokenizer.encode_prompt("import os\n"), 200, GREEDY))  # keeps decoding meanwhile
        assert settles(lambda: engine.num_requests_running == 1)
        request = engine.submit(Request(long, 4, GREEDY, sink=ended.append))
        assert settles(lambda: engine._chunking is not None)  # its 60 chunks are under way
        request.cancel()
        assert settles(lambda: ended and ended[-1].finish_reason == "cancelled")
        assert ended[-1].token_ids == [] and engine._chunking is None
        after = generate(engine, Request(tokenizer.encode_prompt("x = 1\n"), 3, GREEDY))[0]  # the slot is free again
        assert len(after.token_ids) == 3
    finally:
        engine.stop()


def test_a_packed_forward_of_several_prompts_gives_each_its_own_forwards_logits():
    """Prompts continuing their slots after kept prefixes of different lengths, and one fresh prompt, in one packed
    forward without a decode part: each gets the logits and cache rows of its own forward."""
    model = packed_test_model()
    generator = torch.Generator().manual_seed(1)
    held = {0: 5, 1: 12, 2: 0}  # tokens each slot holds already
    new = {0: 7, 1: 3, 2: 10}
    ids = {slot: torch.randint(0, 128, (1, held[slot] + new[slot]), generator=generator) for slot in held}
    caches = [model.new_slot_cache(3, 64) for _ in range(2)]
    with torch.no_grad():
        for cache in caches:
            for slot, n in held.items():
                if n:
                    cache.set_window(slot, 1, prompt_lengths=torch.tensor([n]))
                    model(ids[slot][:, :n], cache=cache)
        apart, packed = caches
        expected = []
        for slot in held:
            if held[slot]:
                apart.set_extend(slot, new[slot])
            else:
                apart.set_window(slot, 1, prompt_lengths=torch.tensor([new[slot]]))
            expected.append(model(ids[slot][:, held[slot]:], cache=apart)[0])
        packed.set_packed(0, [(slot, new[slot]) for slot in held])
        got = model(torch.cat([ids[slot][0, held[slot]:] for slot in held])[None], cache=packed)[0]
    assert (got - torch.cat(expected)).abs().max() <= 1e-5
    assert packed.lengths.tolist() == apart.lengths.tolist() == [12, 15, 10]
    for a, b in zip(apart.buffers, packed.buffers):
        assert (a - b).abs().max() <= 1e-5


def test_the_engine_process_takes_every_core_for_large_forwards_and_leaves_one_for_small_ones():
    from hepta.infer.core import ALL_CORES_FLOPS, engine_threads

    assert engine_threads(ALL_CORES_FLOPS, cores=2) == 2  # a batch of a model of some size, a prompt
    assert engine_threads(ALL_CORES_FLOPS - 1, cores=2) == 1  # one sequence decoding: a core for the API process
    assert engine_threads(0, cores=1) == 1


def test_an_engine_with_a_thread_policy_sets_torchs_threads_before_each_forward(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    asked = []
    threads = torch.get_num_threads()

    def policy(flops: float) -> int:  # the prompt's forward: torch's count; a decode step of one token: one more
        asked.append(flops)
        return threads if flops > engine.token_flops else threads + 1

    engine = Engine(model, tokenizer, EngineConfig(max_num_seqs=2), threads=policy).start()
    try:
        prompt = tokenizer.encode("def f(x):\n    return x + 1\n")
        generate(engine, Request(prompt, 3, SamplingParams(temperature=0)), timeout=60)
        after = engine.run_exclusive(torch.get_num_threads).result()  # on the engine's thread, which decodes
    finally:
        engine.stop()
        torch.set_num_threads(threads)
    assert engine.token_flops == 2 * matmul_params(model.config) > 0
    # the prompt's forward, then a decode step for each of the 2 tokens after the first
    assert asked == [len(prompt) * engine.token_flops] + [engine.token_flops] * 2
    assert after == threads + 1
