"""A hepta folder converted to a Hugging Face type is read by transformers and served by `hepta serve`
with its tokenizer's special tokens, chat template and stop tokens."""

import json

import pytest
from transformers import AutoTokenizer, GenerationConfig

import hepta
from conftest import client, start_server
from helpers import run_cli
from hepta.tokenizer import Tokenizer

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "def hello(world):"},
            {"role": "assistant", "content": "return world"}, {"role": "user", "content": "and then?"}]
QWEN3_LIKE = {"dim": 64, "num_layers": 2, "attention.num_heads": 4, "attention.num_kv_heads": 2,
              "attention.head_dim": 16, "max_seq_len": 256, "moe.num_experts": 4, "moe.top_k": 2,
              "moe.expert_hidden_dim": 32, "moe.num_shared_experts": 0, "attention.qk_norm": True,
              "attention.qk_norm_per_head": True}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    tokenizer = Tokenizer.train(["def hello(world):\n    return world + 1\n", "Be brief. and then?"] * 50,
                                text_vocab_size=300)
    cfg = hepta.ModelConfig().with_changes({**QWEN3_LIKE, "vocab_size": tokenizer.vocab_size})
    hepta.save_model(hepta.build_model(cfg, seed=0), root / "hepta")
    tokenizer.save(root / "hepta")
    proc = run_cli("convert", "--from", str(root / "hepta"), "--to", str(root / "hf"))
    assert proc.returncode == 0, proc.stderr
    return root / "hepta", root / "hf", tokenizer


def test_transformers_renders_the_chat_as_hepta_does(folders):
    _, hf_folder, tokenizer = folders
    assert json.loads((hf_folder / "config.json").read_text())["model_type"] == "qwen3_moe"
    auto = AutoTokenizer.from_pretrained(hf_folder)
    text = auto.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True)
    assert text == tokenizer.format_chat(MESSAGES)
    assert auto(text, add_special_tokens=True).input_ids == tokenizer.encode(text)  # no BOS added
    assert auto.eos_token == "<|endoftext|>" and auto.pad_token_id == tokenizer.special_ids["<|pad|>"]
    stops = GenerationConfig.from_pretrained(hf_folder).eos_token_id
    assert sorted(stops) == sorted([tokenizer.eos_id, tokenizer.end_id])
    with pytest.raises(Exception, match="unknown chat role 'robot'"):
        auto.apply_chat_template([{"role": "robot", "content": "hi"}], tokenize=False)


def test_hepta_serve_answers_a_chat_on_the_converted_folder_as_on_the_original(folders):
    hepta_folder, hf_folder, _ = folders
    usage = {}
    for name, folder in (("hepta", hepta_folder), ("hf", hf_folder)):
        server = start_server(folder)
        try:
            answer = client(server).chat.completions.create(model="micro", messages=MESSAGES, max_tokens=5,
                                                            temperature=0)
        finally:
            server.stop()
        assert answer.choices[0].finish_reason in ("stop", "length")
        usage[name] = answer.usage.prompt_tokens
    assert usage["hf"] == usage["hepta"]  # the same prompt, rendered by the exported template
