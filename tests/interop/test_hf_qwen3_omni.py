"""Qwen3-Omni-MoE's thinker hearing: its language model in hepta, its audio tower beside it, clips in the prompt.

Tiny random thinkers are built with transformers' own classes; `Qwen3OmniMoeThinkerForConditionalGeneration`
is the reference for every logit.
"""

import io
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen3OmniMoeThinkerConfig
from transformers.models.qwen3_omni_moe.modeling_qwen3_omni_moe import Qwen3OmniMoeThinkerForConditionalGeneration

import hepta
from hepta.interop.qwen3_omni_audio import Qwen3OmniAudio

AUDIO, IMAGE, VIDEO, AUDIO_START, VISION_START, AUDIO_END = 190, 191, 192, 193, 194, 195
TEXT = dict(vocab_size=200, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
            max_position_embeddings=512, pad_token_id=None, norm_topk_prob=False,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [3, 3, 2],
                             "mrope_interleaved": True})
# the released chunking (n_window 50: 100 feature frames, 1 s, per chunk), a tiny tower
AUDIO_TOWER = dict(num_mel_bins=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                   output_dim=64, n_window=50, n_window_infer=400, downsample_hidden_size=16, max_source_positions=200)
VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=4,
              spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen3_omni_thinker")
    torch.manual_seed(0)
    config = Qwen3OmniMoeThinkerConfig(text_config=TEXT, audio_config=AUDIO_TOWER, vision_config=VISION,
                                       audio_token_id=AUDIO, image_token_id=IMAGE, video_token_id=VIDEO,
                                       audio_start_token_id=AUDIO_START, vision_start_token_id=VISION_START)
    Qwen3OmniMoeThinkerForConditionalGeneration(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(folder):
    return Qwen3OmniMoeThinkerForConditionalGeneration.from_pretrained(folder).eval(), hepta.load(folder), \
        Qwen3OmniAudio(folder)


def wave(seconds, seed):
    return np.random.default_rng(seed).normal(size=int(16000 * seconds)).astype(np.float32) * 0.1


def prompt(items, seed):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 180, (3,), generator=generator).tolist()
    for item in items:
        ids += [AUDIO_START] + [AUDIO] * item.tokens + [AUDIO_END] + torch.randint(0, 180, (2,), generator=generator).tolist()
    return ids


def reference(hf, ids, items):
    inputs = dict(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    if items:
        longest = max(item.features_MF.shape[1] for item in items)
        inputs["input_features"] = torch.stack([torch.nn.functional.pad(i.features_MF, (0, longest - i.features_MF.shape[1]))
                                                for i in items])
        inputs["feature_attention_mask"] = torch.stack([torch.arange(longest) < i.features_MF.shape[1] for i in items]).long()
    with torch.no_grad():
        return hf(**inputs).logits[0]


def test_logits_match_transformers_for_text_one_clip_and_two_clips_in_a_padded_batch(models):
    hf, ours, audio = models
    cases = [[], [audio.clip(wave(2.5, seed=1))], [audio.clip(wave(1.2, seed=2)), audio.clip(wave(3.0, seed=3))]]
    assert cases[1][0].tokens == 2 * 13 + 7  # two whole 1 s chunks and 50 frames more
    prompts = [prompt(items, seed) for seed, items in enumerate(cases)]
    visual = audio.visual_input(prompts, cases)  # all three at once, right-padded
    length = max(map(len, prompts))
    ids = torch.tensor([p + [0] * (length - len(p)) for p in prompts])
    with torch.no_grad():
        got = ours(ids, visual=visual)
    for row, (p, items) in enumerate(zip(prompts, cases)):
        assert (got[row, :len(p)] - reference(hf, p, items)).abs().max() <= 1e-4


def test_a_complete_qwen3_omni_folder_reads_its_thinker(folder, models, tmp_path):
    _, ours, _ = models
    thinker = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3_omni_moe", "thinker_config": thinker,
                                                      "talker_config": {}, "enable_audio_output": True}))
    weights = {f"thinker.{name}": t for name, t in load_file(str(folder / "model.safetensors")).items()}
    weights["talker.model.layers.0.mlp.gate.weight"] = torch.zeros(4, 8)  # the talker, left unread
    save_file(weights, str(tmp_path / "model.safetensors"))
    ids = torch.randint(0, 180, (2, 7))
    with torch.no_grad():
        assert (hepta.load(tmp_path)(ids) - ours(ids)).abs().max() <= 1e-6
    item = Qwen3OmniAudio(tmp_path).clip(wave(1.0, seed=4))
    assert item.tokens == 13


TEMPLATE = """{%- for message in messages -%}
<|im_start|> {{ message.role }}
{%- if message.content is string %} {{ message.content }}{% else %}{% for part in message.content -%}
{%- if part.type == 'audio' %} <|audio_start|><|audio_pad|><|audio_end|>
{%- else %} {{ part.text }}{% endif %}{% endfor %}{% endif %} <|im_end|>
{% endfor -%}
{%- if add_generation_prompt %}<|im_start|> assistant {% endif -%}"""
SPECIAL = {"<|im_start|>": 186, "<|im_end|>": 187, "<|audio_pad|>": AUDIO, "<|audio_start|>": AUDIO_START,
           "<|audio_end|>": AUDIO_END, "<eos>": 199}


def test_input_audio_parts_are_served_and_other_media_are_refused(folder, models):
    import base64

    import openai
    import soundfile
    from tokenizers import Tokenizer, decoders, models as vocabularies, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from hepta.interop.hf_tokenizer import HFTokenizer
    from hepta.modality.audio_io import decode_audio
    from serve.conftest import client, start_server

    hf, _, audio = models
    vocab = {f"w{i}": i for i in range(200) if i not in SPECIAL.values() and i != 188} | {"<unk>": 188} | SPECIAL
    words = Tokenizer(vocabularies.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<eos>",
                                        additional_special_tokens=[t for t in SPECIAL if t != "<eos>"])
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(folder)
    wav = io.BytesIO()
    soundfile.write(wav, wave(1.5, seed=5), 16000, format="WAV", subtype="PCM_16")
    content = [{"type": "text", "text": "w5"}, {"type": "input_audio", "input_audio": {
        "data": base64.b64encode(wav.getvalue()).decode(), "format": "wav"}}]
    ours = HFTokenizer(folder)
    item = audio.clip(decode_audio(wav.getvalue()))  # what the server builds, built here the same way
    ids = ours.encode(audio.expand(ours.format_chat([{"role": "user", "content": [
        {"type": "text", "text": "w5"}, {"type": "audio"}]}]), [item]))
    with torch.no_grad():
        out = hf.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                          input_features=item.features_MF[None],
                          feature_attention_mask=torch.ones(1, item.features_MF.shape[1], dtype=torch.long),
                          max_new_tokens=8, do_sample=False, suppress_tokens=list(range(180, 200)))
    server = start_server(folder)
    try:
        api = client(server)
        answer = api.chat.completions.create(model="micro", messages=[{"role": "user", "content": content}],
                                             max_tokens=8, temperature=0, logit_bias={str(t): -100 for t in range(180, 200)})
        assert answer.usage.prompt_tokens == len(ids)
        assert answer.choices[0].message.content == ours.decode(out[0, len(ids):].tolist())
        image = [{"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]
        with pytest.raises(openai.BadRequestError, match="reads text, and input_audio parts"):
            api.chat.completions.create(model="micro", messages=[{"role": "user", "content": image}], max_tokens=2)
    finally:
        server.stop()
