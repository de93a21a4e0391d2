"""A small model and a tokenizer trained on real text, shared by the engine's tests."""

import pytest

import hepta
from hepta.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def model_and_tokenizer(corpus):
    tokenizer = Tokenizer.train([f.read_text() for f in sorted(corpus.iterdir())], text_vocab_size=480)
    cfg = hepta.get_preset("tiny").replace(vocab_size=512, dim=64, num_layers=2, num_heads=2, num_kv_heads=1,
                                           head_dim=32, num_experts=4, expert_hidden_dim=32, max_seq_len=256)
    return hepta.build_model(cfg, seed=0).eval(), tokenizer
