"""What only gpt-oss folders have: MXFP4 experts, sliding windows in the decoding cache, the Harmony chat format.

The folders come from transformers' own GptOss classes (`test_hf_load.save_hf`); the MXFP4 ones are
quantised here, and transformers' own dequantisation is the reference.
"""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from transformers.integrations.mxfp4 import convert_moe_packed_tensors

import hepta
from helpers import decoded_logits, max_logit_difference, random_ids
from hepta.errors import HeptaError
from hepta.interop.hf_tokenizer import HFTokenizer
from hepta.model.experts import swiglu
from test_hf_load import save_hf

CASE = "gpt_oss-window-4-yarn"
FP4_VALUES = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])


def quantize_mxfp4(w_ERK: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[E, rows, K] -> blocks [E, rows, K/32, 16] (low nibble first) and scales [E, rows, K/32] (exponent + 127):
    each group of 32 scaled by a power of two that brings its largest value within 6, rounded to the nearest code."""
    E, R, K = w_ERK.shape
    groups = w_ERK.reshape(E, R, K // 32, 32)
    exponent = torch.ceil(torch.log2(groups.abs().amax(-1).clamp(min=1e-30) / 6)).clamp(-127, 127)
    codes = ((groups / torch.exp2(exponent)[..., None])[..., None] - FP4_VALUES).abs().argmin(-1).to(torch.uint8)
    return codes[..., 0::2] | (codes[..., 1::2] << 4), (exponent + 127).to(torch.uint8)


def write_mxfp4_folder(folder):
    """A gpt_oss folder as released: expert matrices as MXFP4 blocks and scales (rows = outputs), the rest as is."""
    hf = save_hf(CASE, folder)
    quantized = {}
    for name, tensor in load_file(str(folder / "model.safetensors")).items():
        if name.endswith(("experts.gate_up_proj", "experts.down_proj")):
            blocks, scales = quantize_mxfp4(tensor.transpose(1, 2).contiguous())
            quantized[name + "_blocks"], quantized[name + "_scales"] = blocks, scales
        else:
            quantized[name] = tensor
    save_file(quantized, str(folder / "model.safetensors"))
    config = json.loads((folder / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (folder / "config.json").write_text(json.dumps(config))
    return hf, quantized


def test_mxfp4_experts_load_as_transformers_dequantises_them(tmp_path):
    hf, quantized = write_mxfp4_folder(tmp_path)
    ours = hepta.load(tmp_path)
    with torch.no_grad():
        for i, layer in enumerate(hf.model.layers):  # transformers' model, given its own dequantised experts
            for proj in ("gate_up_proj", "down_proj"):
                name = f"model.layers.{i}.mlp.experts.{proj}"
                reference = convert_moe_packed_tensors(quantized[name + "_blocks"], quantized[name + "_scales"],
                                                       dtype=torch.float32)
                assert (reference - getattr(layer.mlp.experts, proj)).abs().max() > 1e-3  # quantisation did change them
                getattr(layer.mlp.experts, proj).copy_(reference)
    for seq_len in (1, 9):
        assert max_logit_difference(hf, ours, random_ids(160, 2, seq_len, seed=seq_len)) <= 1e-4
    ours_bf16 = hepta.load(tmp_path, dtype=torch.bfloat16)  # the values are exact in bf16 too
    experts = ours_bf16.layers[0].ffn.experts
    assert experts.gate_up_proj.dtype == torch.bfloat16
    assert torch.equal(experts.gate_up_proj.float(), ours.layers[0].ffn.experts.gate_up_proj)


def test_mxfp4_without_its_scales_and_other_quantizations_are_refused(tmp_path):
    _, quantized = write_mxfp4_folder(tmp_path)
    name = "model.layers.1.mlp.experts.down_proj_scales"
    save_file({k: v for k, v in quantized.items() if k != name}, str(tmp_path / "model.safetensors"))
    with pytest.raises(HeptaError, match="down_proj_blocks without its scales"):
        hepta.load(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gptq"}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(HeptaError, match="quant_method 'gptq'.*mxfp4"):
        hepta.load(tmp_path)


def test_sliding_window_layers_decode_step_by_step_as_one_full_forward(tmp_path):
    save_hf(CASE, tmp_path)  # window 4: the decoded tokens run far past it
    model = hepta.load(tmp_path)
    assert model.config.attention.sliding_window_layers == (0, 2)
    ids = random_ids(160, 2, 17, seed=5)
    with torch.no_grad():
        full = model(ids)
    stepped, _ = decoded_logits(model, ids, prefill=3)
    assert (stepped - full).abs().max() <= 1e-5


# A chat template in the Harmony format gpt-oss is trained on, using what its released template uses
# (macros, namespace, strftime_now, a reasoning_effort variable, the thinking field, raise_exception).
HARMONY_TEMPLATE = """
{%- macro system_message() -%}
{{- "You are a helpful assistant.\\nKnowledge cutoff: 2024-06\\nCurrent date: " + strftime_now("%Y-%m-%d") + "\\n\\n" }}
{{- "Reasoning: " + (reasoning_effort if reasoning_effort is defined else "medium") + "\\n\\n" }}
{{- "# Valid channels: analysis, commentary, final. Channel must be included for every message." }}
{%- endmacro -%}
{{- "<|start|>system<|message|>" + system_message() + "<|end|>" }}
{%- if messages[0].role in ("system", "developer") %}
{{- "<|start|>developer<|message|># Instructions\\n\\n" + messages[0].content + "\\n\\n<|end|>" }}
{%- set messages = messages[1:] %}
{%- endif %}
{%- set state = namespace(turns=0) %}
{%- for message in messages %}
{%- if message.role == "user" %}
{{- "<|start|>user<|message|>" + message.content + "<|end|>" }}
{%- elif message.role == "assistant" %}
{%- if "<|channel|>" in message.content %}{{ raise_exception("pass the analysis in the thinking field") }}{% endif %}
{%- if loop.last and not add_generation_prompt and message.thinking is defined %}
{{- "<|start|>assistant<|channel|>analysis<|message|>" + message.thinking + "<|end|>" }}
{%- endif %}
{{- "<|start|>assistant<|channel|>final<|message|>" + message.content + ("<|return|>" if loop.last else "<|end|>") }}
{%- set state.turns = state.turns + 1 %}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ "<|start|>assistant" }}{% endif %}
"""
HARMONY_TOKENS = ["<|start|>", "<|message|>", "<|end|>", "<|channel|>", "<|return|>", "<|call|>", "<|endoftext|>"]


def write_harmony_tokenizer(folder):
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(["<unk>", "hi", "there"])}, unk_token="<unk>"))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<|return|>",
                                        additional_special_tokens=HARMONY_TOKENS)
    tokenizer.chat_template = HARMONY_TEMPLATE
    tokenizer.save_pretrained(folder)
    ids = tokenizer.convert_tokens_to_ids(["<|return|>", "<|call|>", "<|endoftext|>"])
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": ids}))
    return tokenizer, ids


@pytest.mark.parametrize("effort", [None, "high"])
def test_the_harmony_template_renders_as_transformers_renders_it_and_its_stop_tokens_end_generation(tmp_path, effort):
    reference, stop_ids = write_harmony_tokenizer(tmp_path)
    assert (tmp_path / "chat_template.jinja").is_file()  # transformers 5 writes templates as their own file
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "there", "reasoning_content": "a greeting"},
                {"role": "user", "content": "hi again"}]
    kwargs = {} if effort is None else {"reasoning_effort": effort}
    ours = HFTokenizer(tmp_path)
    for generation_prompt in (True, False):
        expected = reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt,
                                                 **kwargs)
        assert ours.format_chat(messages, add_generation_prompt=generation_prompt, **kwargs) == expected
    assert f"Reasoning: {effort or 'medium'}" in expected
    assert set(stop_ids) <= ours.stop_ids
    with pytest.raises(HeptaError, match="pass the analysis in the thinking field"):
        ours.format_chat([{"role": "assistant", "content": "<|channel|>final<|message|>x"}])


def write_served_folder(folder):
    """A gpt_oss folder with a word-level tokenizer that keeps the template's words apart, and the Harmony template."""
    save_hf(CASE, folder)
    vocab = ["<unk>", "Reasoning:", "low", "medium", "high", "hi", "there", "assistant", "analysis", "final",
             *HARMONY_TOKENS]
    words = Tokenizer(models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.decoder = decoders.ByteLevel()  # a decoder the grammar engine knows (gpt-oss's own is byte-level too)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<|return|>",
                                        additional_special_tokens=HARMONY_TOKENS)
    tokenizer.chat_template = HARMONY_TEMPLATE
    tokenizer.save_pretrained(folder)
    return tokenizer


def test_a_served_gpt_oss_folder_renders_the_requested_reasoning_effort_and_batches_chats(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from hepta.serve.prompts import chat_prompt_ids
    from hepta.serve.schemas import ChatCompletionRequest
    from serve.conftest import client, start_server

    write_served_folder(tmp_path)
    ours = HFTokenizer(tmp_path)
    messages = [{"role": "user", "content": "hi there"}]
    body = ChatCompletionRequest(model="m", messages=messages, reasoning_effort="high")
    assert chat_prompt_ids(body, ours) == ours.encode(ours.format_chat(messages, reasoning_effort="high"))
    assert chat_prompt_ids(body, ours) != ours.encode(ours.format_chat(messages))

    server = start_server(tmp_path, engine={"max_num_seqs": 8})
    try:
        api = client(server)

        def ask(effort):
            return api.chat.completions.create(model="micro", messages=messages, max_tokens=12, temperature=0,
                                               reasoning_effort=effort)

        alone = {effort: ask(effort) for effort in ("low", "high")}
        with ThreadPoolExecutor(8) as pool:  # eight at once, each as it was alone
            together = list(pool.map(ask, ["low", "high"] * 4))
        for i, answer in enumerate(together):
            effort = ("low", "high")[i % 2]
            assert answer.choices[0].message.content == alone[effort].choices[0].message.content
        with pytest.raises(Exception, match="chat_template_kwargs cannot set messages"):
            api.chat.completions.create(model="micro", messages=messages, max_tokens=2,
                                        extra_body={"chat_template_kwargs": {"messages": []}})
    finally:
        server.stop()


def write_scripted_weights(folder, tokenizer):
    """Weights whose next token depends only on the last one, following SCRIPT: every layer's output is zeroed,
    so the final hidden state is the last token's embedding (a basis vector), and lm_head scores each successor."""
    script = {"assistant": {"<|channel|>": 9}, "<|channel|>": {"analysis": 9, "final": 5},
              "analysis": {"<|message|>": 9}, "final": {"<|message|>": 9}, "<|message|>": {"hi": 9},
              "hi": {"there": 9}, "there": {"<|end|>": 9, "<|return|>": 5}, "<|end|>": {"<|start|>": 9},
              "<|start|>": {"assistant": 9}}
    weights = load_file(str(folder / "model.safetensors"))
    for name, tensor in weights.items():
        if name.endswith(("o_proj.weight", "o_proj.bias", "down_proj", "down_proj_bias")):
            tensor.zero_()
    ids = tokenizer.convert_tokens_to_ids
    embed, head = weights["model.embed_tokens.weight"], weights["lm_head.weight"]
    embed.zero_()
    head.zero_()
    weights["model.norm.weight"].fill_(1.0)
    for token, successors in script.items():
        embed[ids(token), ids(token)] = 1.0
        for successor, score in successors.items():
            head[ids(successor), ids(token)] = score
    save_file(weights, str(folder / "model.safetensors"))
    return ids


def test_a_served_gpt_oss_answer_comes_back_as_reasoning_and_content(tmp_path):
    from serve.conftest import client, start_server

    ids = write_scripted_weights(tmp_path, write_served_folder(tmp_path))
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [ids("<|return|>")]}))
    server = start_server(tmp_path)
    try:
        api = client(server)
        messages = [{"role": "user", "content": "hi"}]
        # the model thinks (analysis) for as long as it may; banning "analysis" makes it answer (final) and stop
        thinking = api.chat.completions.create(model="micro", messages=messages, max_tokens=14, temperature=0)
        answer = api.chat.completions.create(model="micro", messages=messages, max_tokens=14, temperature=0,
                                             logit_bias={str(ids("analysis")): -100, str(ids("<|end|>")): -100})
        streamed = list(api.chat.completions.create(model="micro", messages=messages, max_tokens=14, temperature=0,
                                                    stream=True))
    finally:
        server.stop()
    reference = HFTokenizer(tmp_path)
    hi_there = reference.decode([ids("hi"), ids("there")])
    assert thinking.choices[0].message.content == "" and thinking.choices[0].finish_reason == "length"
    assert thinking.choices[0].message.model_extra["reasoning_content"].startswith(hi_there + hi_there)
    assert answer.choices[0].message.content == hi_there and answer.choices[0].finish_reason == "stop"
    assert "reasoning_content" not in answer.choices[0].message.model_extra
    pieces = [chunk.choices[0].delta.model_extra.get("reasoning_content") for chunk in streamed if chunk.choices]
    assert "".join(p for p in pieces if p) == thinking.choices[0].message.model_extra["reasoning_content"]
    assert not any("<|" in (chunk.choices[0].delta.content or "") for chunk in streamed if chunk.choices)


def test_windows_sinks_and_the_clamp_each_change_the_logits(tmp_path):
    hf = save_hf(CASE, tmp_path)
    ids = random_ids(160, 2, 33, seed=3)
    ablations = {"window": lambda m: [setattr(layer.attn, "window", None) for layer in m.layers],
                 "sinks": lambda m: [layer.attn.sinks.data.fill_(-1e9) for layer in m.layers],
                 "clamp": lambda m: [setattr(moe.experts, "activation", swiglu) for moe in m.moe_layers()]}
    for name, ablate in ablations.items():  # what the parity tests rest on: each feature matters in this config
        model = hepta.load(tmp_path)
        ablate(model)
        assert max_logit_difference(hf, model, ids) > 1e-2, name
