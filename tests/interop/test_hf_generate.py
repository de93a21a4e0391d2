"""A Hugging Face folder (weights, tokenizer, chat template) works with `hepta generate` as is."""

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import OlmoeConfig, OlmoeForCausalLM, PreTrainedTokenizerFast

from helpers import run_cli


def make_folder(tmp_path, bos: bool = False):
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20,
                            trainers.BpeTrainer(vocab_size=290, special_tokens=["<eos>"],
                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:  # Llama-style: the tokenizer puts <s> in front of every text
        from tokenizers import processors

        bpe.add_special_tokens(["<s>"])
        bpe.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", bpe.token_to_id("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<eos>", bos_token="<s>" if bos else None)
    torch.manual_seed(0)
    model = OlmoeForCausalLM(OlmoeConfig(vocab_size=300, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, num_experts=4,
                                         num_experts_per_tok=2, pad_token_id=None, bos_token_id=None,
                                         eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return model, tokenizer


@pytest.mark.parametrize("bos", [False, True])
def test_generate_streams_from_a_hugging_face_folder(tmp_path, bos):
    model, tokenizer = make_folder(tmp_path, bos)
    proc = run_cli("generate", "--model", str(tmp_path), "--prompt", "the quick", "--max-tokens", "8",
                   "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("the quick") and len(proc.stdout.strip()) > len("the quick")
    # greedy hepta continuation equals transformers' greedy continuation
    ids = tokenizer("the quick", return_tensors="pt").input_ids
    expected = tokenizer.decode(model.generate(ids, max_new_tokens=8, do_sample=False)[0, ids.shape[1]:])
    assert proc.stdout.rstrip("\n") == "the quick" + expected.split("<eos>")[0]


def test_a_converted_folder_keeps_its_tokenizer(tmp_path):
    make_folder(tmp_path / "hf")
    assert run_cli("convert", "--from", str(tmp_path / "hf"), "--to", str(tmp_path / "hepta")).returncode == 0
    direct = run_cli("generate", "--model", str(tmp_path / "hf"), "--prompt", "the", "--max-tokens", "6",
                     "--temperature", "0")
    converted = run_cli("generate", "--model", str(tmp_path / "hepta"), "--prompt", "the", "--max-tokens", "6",
                        "--temperature", "0")
    assert converted.returncode == 0, converted.stderr
    assert converted.stdout == direct.stdout
