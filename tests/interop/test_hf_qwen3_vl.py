"""Qwen3-VL-MoE folders: the language model in hepta, the vision tower beside it, images and videos in the prompt.

Tiny random models are built with transformers' own classes; `Qwen3VLMoeForConditionalGeneration` is the
reference for every logit.
"""

import json

import pytest
import torch
from PIL import Image
from transformers import Qwen3VLMoeConfig, Qwen3VLMoeForConditionalGeneration

import hepta
from hepta.interop.qwen3_vl import load_vision_tower
from hepta.interop.qwen3_vl_inputs import Qwen3VLPreprocessor

IMAGE, VIDEO, START, END = 190, 191, 192, 193
TEXT = dict(vocab_size=200, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
            max_position_embeddings=512, pad_token_id=None,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [3, 3, 2],
                             "mrope_interleaved": True})
VISION = dict(depth=3, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=4,
              spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64, deepstack_visual_indexes=[0, 1])


def qwen3_vl_config(**text) -> Qwen3VLMoeConfig:
    return Qwen3VLMoeConfig(text_config={**TEXT, **text}, vision_config=VISION, image_token_id=IMAGE,
                            video_token_id=VIDEO, vision_start_token_id=START, vision_end_token_id=END)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("qwen3_vl")
    torch.manual_seed(0)
    model = Qwen3VLMoeForConditionalGeneration(qwen3_vl_config()).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "norm" in name:
                param.add_(torch.randn_like(param), alpha=0.2)
    model.save_pretrained(folder)
    # images stay at their own size (a multiple of 8 pixels) in this tiny model
    (folder / "preprocessor_config.json").write_text(json.dumps({"size": {"shortest_edge": 64, "longest_edge": 4096}}))
    return folder


@pytest.fixture(scope="module")
def models(folder):
    return (Qwen3VLMoeForConditionalGeneration.from_pretrained(folder).eval(), hepta.load(folder),
            load_vision_tower(folder), Qwen3VLPreprocessor(folder))


def picture(width, height, seed):
    generator = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy())


def prompt(pre, items, seed):
    """Random text around each image or frame pair's placeholders (a timestamp's tokens stand in as text)."""
    generator = torch.Generator().manual_seed(seed)
    words = lambda n: torch.randint(0, 180, (n,), generator=generator).tolist()  # noqa: E731
    ids = words(3)
    for item in items:
        for _ in range(item.grid_thw[0]):
            ids += words(2) + [START] + [IMAGE if item.kind == "image" else VIDEO] * pre.tokens(item) + [END]
    return ids + words(4)


def transformers_inputs(ids, items) -> dict:
    """What Qwen3VLMoeForConditionalGeneration takes for one prompt with these images and videos."""
    kinds = torch.tensor(ids)
    inputs = dict(input_ids=kinds[None], mm_token_type_ids=((kinds == IMAGE) * 1 + (kinds == VIDEO) * 2)[None])
    images = [item for item in items if item.kind == "image"]
    videos = [item for item in items if item.kind == "video"]
    if images:
        inputs.update(pixel_values=torch.cat([i.pixels_PX for i in images]),
                      image_grid_thw=torch.tensor([i.grid_thw for i in images]))
    if videos:
        inputs.update(pixel_values_videos=torch.cat([v.pixels_PX for v in videos]),
                      video_grid_thw=torch.tensor([v.grid_thw for v in videos]))
    return inputs


def reference_logits(hf, ids, items):
    with torch.no_grad():
        return hf(**transformers_inputs(ids, items)).logits[0]


MEDIA = {
    "text only": lambda pre: [],
    "one image": lambda pre: [pre.image(picture(32, 40, seed=1))],
    "two images of different sizes": lambda pre: [pre.image(picture(32, 40, seed=2)), pre.image(picture(48, 24, 3))],
    "a timestamped video": lambda pre: [pre.video([picture(24, 32, seed=s) for s in range(5)],
                                                  [0.0, 0.5, 1.0, 1.5, 2.0])],
}


@pytest.mark.parametrize("case", list(MEDIA))
def test_logits_match_transformers(models, case):
    hf, ours, tower, pre = models
    items = MEDIA[case](pre)
    ids = prompt(pre, items, seed=len(case))
    visual = pre.visual_input(tower, [ids], [items])
    with torch.no_grad():
        got = ours(torch.tensor([ids]), visual=visual)[0]
    assert (got - reference_logits(hf, ids, items)).abs().max() <= 1e-4


def test_sixteen_greedy_tokens_through_the_engine_equal_transformers_generate_with_media_and_text_batched(folder,
                                                                                                         models):
    from tokenizers import Tokenizer, models as vocabularies
    from transformers import PreTrainedTokenizerFast

    from hepta.infer.engine import Engine, EngineConfig, generate_many
    from hepta.infer.request import Request
    from hepta.infer.sampling import SamplingParams
    from hepta.interop.qwen3_vl_inputs import Qwen3VLVision
    from hepta.loading import load_tokenizer

    hf, ours, _, pre = models
    words = Tokenizer(vocabularies.WordLevel({f"w{i}": i for i in range(200)}, unk_token="w0"))
    PreTrainedTokenizerFast(tokenizer_object=words, eos_token="w199").save_pretrained(folder)
    requests = []
    for case, seed in (("one image", 5), ("text only", 6), ("a timestamped video", 7), ("two images of different sizes", 8)):
        items = MEDIA[case](pre)
        ids = prompt(pre, items, seed) if items else torch.randint(0, 180, (50,)).tolist()  # as long as the rest
        requests.append((ids, items))
    expected = []
    for ids, items in requests:  # transformers, one at a time
        with torch.no_grad():
            out = hf.generate(**transformers_inputs(ids, items), max_new_tokens=16, do_sample=False, suppress_tokens=[199, *range(180, 200)])
        expected.append(out[0, len(ids):].tolist())
    # prefilled together (media and text in one batch), each with its own positions, then decoded together with
    # its own RoPE offset
    engine = Engine(ours, load_tokenizer(folder), EngineConfig(max_num_seqs=4), vision=Qwen3VLVision(folder)).start()
    try:
        banned = {token: -100.0 for token in [199, *range(180, 200)]}
        got = generate_many(engine, [Request(ids, 16, SamplingParams(temperature=0.0), logit_bias=banned, media=items)
                                     for ids, items in requests])
    finally:
        engine.stop()
    assert [choices[0].token_ids for choices in got] == expected


# A chat template in Qwen's layout: an image part becomes <|vision_start|><|image_pad|><|vision_end|>, a video part
# the same with <|video_pad|>, as transformers' processors expect to find them.
TEMPLATE = """{%- for message in messages -%}
<|im_start|> {{ message.role }}
{%- if message.content is string %} {{ message.content }}{% else %}{% for part in message.content -%}
{%- if part.type == 'image' %} <|vision_start|><|image_pad|><|vision_end|>
{%- elif part.type == 'video' %} <|vision_start|><|video_pad|><|vision_end|>
{%- else %} {{ part.text }}{% endif %}{% endfor %}{% endif %} <|im_end|>
{% endfor -%}
{%- if add_generation_prompt %}<|im_start|> assistant {% endif -%}"""
SPECIAL = {"<|im_start|>": 186, "<|im_end|>": 187, "<|image_pad|>": IMAGE, "<|video_pad|>": VIDEO,
           "<|vision_start|>": START, "<|vision_end|>": END, "<eos>": 199}


def write_chat_tokenizer(folder):
    from tokenizers import Tokenizer, decoders, models as vocabularies, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(200)} | {"<unk>": 188} | SPECIAL
    vocab = {word: i for word, i in vocab.items() if i not in SPECIAL.values() or word in SPECIAL}
    vocab = {word: i for word, i in vocab.items() if i != 188 or word == "<unk>"}
    words = Tokenizer(vocabularies.WordLevel(vocab, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    words.decoder = decoders.ByteLevel()  # one the grammar engine reads
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, eos_token="<eos>",
                                        additional_special_tokens=[t for t in SPECIAL if t != "<eos>"])
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(folder)


def data_url(kind, data):
    import base64

    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def test_image_and_video_parts_are_served_and_bad_media_get_400s(folder, models):
    import io

    import numpy as np
    import openai

    from hepta.interop.hf_tokenizer import HFTokenizer
    from hepta.modality.video_io import decode_video, encode_video
    from serve.conftest import client, start_server

    hf, _, _, pre = models
    write_chat_tokenizer(folder)
    image = picture(32, 40, seed=11)
    png = io.BytesIO()
    image.save(png, format="PNG")
    frames = np.stack([np.asarray(picture(24, 32, seed=20 + i)).transpose(2, 0, 1) / 255.0 for i in range(4)])
    mp4 = encode_video(frames, fps=2)
    content = [{"type": "text", "text": "w5 w6"}, {"type": "image_url", "image_url": {"url": data_url("image/png", png.getvalue())}},
               {"type": "video_url", "video_url": {"url": data_url("video/mp4", mp4), "fps": 2}},
               {"type": "text", "text": "w7"}]
    # what the server builds, built here the same way, and transformers' greedy answer to it
    video = decode_video(mp4, image_size=None, channels=3, fps=2)
    items = [pre.image(image), pre.video([Image.fromarray((f.transpose(1, 2, 0) * 255).round().astype("uint8"))
                                          for f in video.pixels], video.times.tolist())]
    tokenizer = HFTokenizer(folder)
    chat = [{"role": "user", "content": [{"type": "text", "text": "w5 w6"}, {"type": "image"}, {"type": "video"},
                                         {"type": "text", "text": "w7"}]}]
    ids = tokenizer.encode(pre.expand(tokenizer.format_chat(chat), items))
    with torch.no_grad():
        out = hf.generate(**transformers_inputs(ids, items), max_new_tokens=8, do_sample=False,
                          suppress_tokens=list(range(180, 200)))
    expected = tokenizer.decode(out[0, len(ids):].tolist())

    server = start_server(folder)
    try:
        api = client(server)
        answer = api.chat.completions.create(
            model="micro", messages=[{"role": "user", "content": content}], max_tokens=8, temperature=0,
            logit_bias={str(t): -100 for t in range(180, 200)})
        assert answer.usage.prompt_tokens == len(ids)
        assert answer.choices[0].message.content == expected
        text_only = api.chat.completions.create(model="micro", messages=[{"role": "user", "content": "w1 w2"}],
                                                max_tokens=3, temperature=0)
        assert text_only.usage.prompt_tokens == len(tokenizer.encode(tokenizer.format_chat(
            [{"role": "user", "content": "w1 w2"}])))
        broken = [{"type": "image_url", "image_url": {"url": data_url("image/png", b"not a png")}}]
        with pytest.raises(openai.BadRequestError, match="not an image"):
            api.chat.completions.create(model="micro", messages=[{"role": "user", "content": broken}], max_tokens=2)
        truncated = [{"type": "video_url", "video_url": {"url": data_url("video/mp4", mp4[: len(mp4) // 3])}}]
        with pytest.raises(openai.BadRequestError, match="video"):
            api.chat.completions.create(model="micro", messages=[{"role": "user", "content": truncated}], max_tokens=2)
    finally:
        server.stop()


def test_the_vision_encoders_prefill_memory_comes_out_of_the_kv_budget(folder, models):
    from hepta.infer.engine import Engine, EngineConfig
    from hepta.interop.qwen3_vl_inputs import Qwen3VLVision
    from hepta.loading import load_tokenizer

    _, ours, _, _ = models
    write_chat_tokenizer(folder)
    vision = Qwen3VLVision(folder)
    config = dict(max_num_seqs=64, max_model_len=256, max_prefill_tokens=1024)
    slot_bytes = ours.new_slot_cache(1, 256, device="meta").num_bytes()
    budget = vision.prefill_bytes(1024) + 3 * slot_bytes
    text_only = Engine(ours, load_tokenizer(folder), EngineConfig(**config, kv_cache_bytes=budget))
    with_vision = Engine(ours, load_tokenizer(folder), EngineConfig(**config, kv_cache_bytes=budget), vision=vision)
    assert with_vision.num_slots == 3 < text_only.num_slots
    with pytest.raises(Exception, match="less .* MiB for the vision encoder"):
        Engine(ours, load_tokenizer(folder), EngineConfig(**config, kv_cache_bytes=budget // 2), vision=vision)


def test_a_folder_with_experts_transposed_as_released_loads_the_same(folder, models, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    _, ours, _, _ = models
    for name in ("config.json", "model.safetensors"):
        shutil.copy(folder / name, tmp_path / name)
    weights = load_file(str(tmp_path / "model.safetensors"))
    gate_up = weights["model.language_model.layers.0.mlp.experts.gate_up_proj"]
    assert gate_up.shape[1] == gate_up.shape[2] == 64  # 2F == D: the orientation cannot come from this shape
    released = {name: t.transpose(1, 2).contiguous() if name.endswith(("experts.gate_up_proj", "experts.down_proj"))
                else t for name, t in weights.items()}
    save_file(released, str(tmp_path / "model.safetensors"))
    ids = torch.randint(0, 180, (2, 9))
    with torch.no_grad():
        assert (hepta.load(tmp_path)(ids) - ours(ids)).abs().max() <= 1e-5


def test_deepstack_and_multimodal_positions_each_change_the_answer(models):
    import dataclasses

    hf, ours, tower, pre = models
    items = MEDIA["one image"](pre)
    ids = prompt(pre, items, seed=3)
    visual = pre.visual_input(tower, [ids], [items])
    reference = reference_logits(hf, ids, items)
    plain = torch.arange(len(ids)).expand(3, 1, -1)
    with torch.no_grad():  # what the parity above rests on: leaving either out moves the logits far past 1e-4
        for ablated in (dataclasses.replace(visual, deepstack_LND=[]), dataclasses.replace(visual, positions_3BT=plain)):
            assert (ours(torch.tensor([ids]), visual=ablated)[0] - reference).abs().max() > 1e-2


def test_converting_to_hepta_says_the_vision_tower_stays_behind(folder, tmp_path):
    from helpers import run_cli

    proc = run_cli("convert", "--from", str(folder), "--to", str(tmp_path / "text"))
    assert proc.returncode == 0, proc.stderr
    assert "vision tower stayed behind" in proc.stdout
    ids = torch.randint(0, 180, (1, 6))
    with torch.no_grad():  # the language model itself came across whole
        assert (hepta.load(tmp_path / "text")(ids) - hepta.load(folder)(ids)).abs().max() <= 1e-6
