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


def reference_logits(hf, ids, items):
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
    with torch.no_grad():
        return hf(**inputs).logits[0]


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
        kinds = torch.tensor(ids)
        inputs = dict(input_ids=kinds[None], mm_token_type_ids=((kinds == IMAGE) * 1 + (kinds == VIDEO) * 2)[None])
        images, videos = [i for i in items if i.kind == "image"], [i for i in items if i.kind == "video"]
        if images:
            inputs.update(pixel_values=torch.cat([i.pixels_PX for i in images]),
                          image_grid_thw=torch.tensor([i.grid_thw for i in images]))
        if videos:
            inputs.update(pixel_values_videos=torch.cat([v.pixels_PX for v in videos]),
                          video_grid_thw=torch.tensor([v.grid_thw for v in videos]))
        with torch.no_grad():
            out = hf.generate(**inputs, max_new_tokens=16, do_sample=False, suppress_tokens=[199, *range(180, 200)])
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
