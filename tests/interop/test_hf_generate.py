"""A Hugging Face folder (weights, tokenizer, chat template) works with `hepta generate` as is."""

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast

from helpers import run_cli


def test_generate_streams_from_a_hugging_face_folder(tmp_path):
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20,
                            trainers.BpeTrainer(vocab_size=290, special_tokens=["<eos>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>")
    torch.manual_seed(0)
    model = OlmoeForCausalLM(OlmoeConfig(vocab_size=300, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, num_experts=4,
                                         num_experts_per_tok=2, pad_token_id=None, bos_token_id=None,
                                         eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    proc = run_cli("generate", "--model", str(tmp_path), "--prompt", "the quick", "--max-tokens", "8",
                   "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("the quick") and len(proc.stdout.strip()) > len("the quick")
    # greedy hepta continuation equals transformers' greedy continuation
    ids = tokenizer("the quick", return_tensors="pt").input_ids
    expected = tokenizer.decode(model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:])
    assert proc.stdout.rstrip("\n") == "the quick" + expected.split("<eos>")[0]
