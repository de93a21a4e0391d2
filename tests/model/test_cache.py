"""The slot cache (continuous batching) gives every sequence exactly its own full-forward logits."""

import pytest
import torch

import hepta

SHAPE = {"vocab_size": 300, "dim": 64, "attention.num_heads": 4, "attention.num_kv_heads": 2,
         "attention.head_dim": 16, "moe.num_experts": 4, "moe.expert_hidden_dim": 32, "max_seq_len": 64}
MLA = {**SHAPE, "attention.qk_norm": False, "attention.kind": "mla", "attention.kv_lora_rank": 16,
       "attention.q_lora_rank": 24, "attention.qk_nope_head_dim": 8, "attention.qk_rope_head_dim": 6,
       "attention.v_head_dim": 8}


@pytest.mark.parametrize("shape", [SHAPE, MLA], ids=["gqa", "mla"])
def test_ragged_sequences_in_slots_match_their_own_full_forward(shape):
    model = hepta.build_model(hepta.get_preset("tiny").with_changes(shape), seed=0).eval()
    lengths = [5, 11, 8]
    seqs = [torch.randint(0, 300, (n + 8,), generator=torch.Generator().manual_seed(n)) for n in lengths]
    cache = model.new_slot_cache(num_slots=4, max_len=32)
    got = [[] for _ in seqs]
    with torch.no_grad():
        # prefill the first two together (right-padded), the third later into the next slot, as an engine would
        prompts = torch.zeros(2, 11, dtype=torch.long)
        for row, (seq, n) in enumerate(zip(seqs[:2], lengths[:2])):
            prompts[row, :n] = seq[:n]
        cache.set_window(0, 2, prompt_lengths=torch.tensor(lengths[:2]))
        logits = model(prompts, cache=cache)
        assert cache.lengths[:2].tolist() == lengths[:2]
        for row in range(2):
            got[row].append(logits[row, lengths[row] - 1])
        for step in range(6):
            if step == 2:  # a request joins the running batch at a token boundary
                cache.set_window(2, 1)
                got[2].append(model(seqs[2][None, :lengths[2]], cache=cache)[0, -1])
            running = 2 if step < 2 else 3
            cache.set_window(0, running)
            next_ids = torch.stack([seqs[row][lengths[row] + len(got[row]) - 1] for row in range(running)])
            logits = model(next_ids[:, None], cache=cache)
            for row in range(running):
                got[row].append(logits[row, 0])
        # the first sequence finishes; the last moves into its slot and keeps decoding from there
        cache.move(2, 0)
        cache.release(2)
        cache.set_window(0, 2)
        rows = [2, 1]
        next_ids = torch.stack([seqs[r][lengths[r] + len(got[r]) - 1] for r in rows])
        logits = model(next_ids[:, None], cache=cache)
        for i, r in enumerate(rows):
            got[r].append(logits[i, 0])
        for row, seq in enumerate(seqs):
            n = lengths[row]
            full = model(seq[None, :n + len(got[row]) - 1])[0, n - 1:]
            torch.testing.assert_close(torch.stack(got[row]), full, atol=1e-5, rtol=1e-5)


def test_slot_cache_refuses_mixing_fresh_and_running_slots():
    model = hepta.build_model(hepta.get_preset("tiny").with_changes(SHAPE), seed=0)
    cache = model.new_slot_cache(num_slots=2, max_len=8)
    cache.lengths[0] = 3
    with pytest.raises(AssertionError):
        cache.set_window(0, 2)


def test_logits_at_marked_positions_equal_the_full_logits_there():
    model = hepta.build_model(hepta.get_preset("tiny").with_changes(SHAPE), seed=0).eval()
    ids = torch.randint(0, 300, (3, 12), generator=torch.Generator().manual_seed(1))
    marked = torch.zeros(3, 12, dtype=torch.bool)
    marked[0, 4], marked[2, 7:10] = True, True
    with torch.no_grad():
        full, some = model(ids), model(ids, logits_at_BT=marked)
    assert some.shape == (4, 300)
    torch.testing.assert_close(some, full[marked])
