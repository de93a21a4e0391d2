"""What only Qwen3.5-MoE folders have: Gated DeltaNet layers whose recurrent state lives in the decoding cache.

Folders come from transformers' own classes (`test_hf_load.save_hf`); transformers' torch path is the reference.
"""

import torch

import hepta
from helpers import decoded_logits, max_logit_difference, random_ids
from test_hf_load import save_hf

CASE = "qwen3_5_moe_text-3-linear-1-full"


def test_logits_over_several_chunks_match_transformers(tmp_path):
    hf = save_hf(CASE, tmp_path)  # 150 tokens: the linear layers' prefill runs three chunks of 64
    assert max_logit_difference(hf, hepta.load(tmp_path), random_ids(160, 2, 150, seed=2)) <= 1e-4


def test_prefill_then_step_by_step_decoding_equals_one_full_forward(tmp_path):
    save_hf(CASE, tmp_path)
    model = hepta.load(tmp_path)
    cache = model.new_slot_cache(num_slots=1, max_len=8)
    assert len(cache.buffers[0]) == 1 and len(cache.states[1]) == 3  # keys and values for the full layer only
    ids = random_ids(160, 2, 140, seed=6)
    with torch.no_grad():
        full = model(ids)
    for prefill in (1, 70):  # nearly all steps, or a prefill over two chunks and then steps
        stepped, _ = decoded_logits(model, ids, prefill=prefill)
        assert (stepped - full).abs().max() <= 1e-4


def test_right_padded_prompts_leave_each_state_at_its_own_end(tmp_path):
    save_hf(CASE, tmp_path)
    model = hepta.load(tmp_path)
    short, long = random_ids(160, 1, 5, seed=1), random_ids(160, 1, 12, seed=2)
    batch = torch.cat([torch.nn.functional.pad(short, (0, 7)), long])
    cache = model.new_slot_cache(num_slots=2, max_len=20)
    with torch.no_grad():
        cache.set_window(0, 2, prompt_lengths=torch.tensor([5, 12]))
        model(batch, cache=cache)
        cache.set_window(0, 2)
        next_BV = model(torch.tensor([[7], [7]]), cache=cache)[:, -1]
        for i, prompt in enumerate((short, long)):  # each alone, without padding
            alone = model(torch.cat([prompt, torch.tensor([[7]])], dim=1))[0, -1]
            assert (next_BV[i] - alone).abs().max() <= 1e-4


def test_requests_that_end_at_different_steps_keep_their_states_as_slots_move(tmp_path):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    from hepta.infer.engine import Engine, EngineConfig, generate_many
    from hepta.infer.request import Request
    from hepta.infer.sampling import SamplingParams
    from hepta.loading import load_tokenizer

    hf = save_hf(CASE, tmp_path)
    words = Tokenizer(models.WordLevel({f"w{i}": i for i in range(160)}, unk_token="w0"))
    PreTrainedTokenizerFast(tokenizer_object=words, eos_token="w159").save_pretrained(tmp_path)
    prompts = [random_ids(160, 1, length, seed=length) for length in (5, 9, 3, 17, 11, 6)]
    lengths = [4, 30, 9, 2, 24, 15]  # finished sequences free their slots and the last running one moves in
    with torch.no_grad():
        expected = [hf.generate(p, max_new_tokens=n, do_sample=False, suppress_tokens=[159])[0, p.shape[1]:].tolist()
                    for p, n in zip(prompts, lengths)]
    engine = Engine(hepta.load(tmp_path), load_tokenizer(tmp_path), EngineConfig(max_num_seqs=6)).start()
    try:
        got = generate_many(engine, [Request(p[0].tolist(), n, SamplingParams(temperature=0.0), logit_bias={159: -100.0})
                                     for p, n in zip(prompts, lengths)])
    finally:
        engine.stop()
    assert [choices[0].token_ids for choices in got] == expected
