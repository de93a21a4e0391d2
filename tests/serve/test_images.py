"""Images through the API with the real `openai` client: image_url parts in, images in answers,
/v1/images/generations and /v1/images/edits, and every bad image refused with a 400 naming its part."""

from __future__ import annotations

import asyncio
import base64
import io

import httpx
import numpy as np
import openai
import pytest
from conftest import client, metric, start_server
from omni_fixture import make_omni_folder
from PIL import Image

from hepta.loading import load_image_codec, load_tokenizer
from hepta.modality.chat import ImageCodes, Turn, encode_chat
from hepta.modality.image_io import decode_image, encode_png, png_data_url


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    return make_omni_folder(tmp_path_factory.mktemp("omni") / "omni")


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("allowed")


@pytest.fixture(scope="module")
def omni_server(omni_dir, image_dir):
    server = start_server(omni_dir, allow_image_dirs=(str(image_dir),), engine={"max_num_seqs": 4})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def omni(omni_server):
    return client(omni_server)


def digit_png(seed: int, side: int = 8) -> bytes:
    return encode_png(np.random.default_rng(seed).random((1, side, side), dtype=np.float32))


def image_part(png: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": png_data_url(png)}}


def png_side(png: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(png)).size


def error_of(excinfo) -> dict:
    return excinfo.value.body if isinstance(excinfo.value.body, dict) and "param" in excinfo.value.body \
        else excinfo.value.response.json()["error"]


def test_several_images_among_text_are_prompted_exactly_as_encode_chat(omni, omni_dir):
    pngs = [digit_png(1), digit_png(2), digit_png(3)]
    messages = [
        {"role": "system", "content": "You read digits."},
        {"role": "user", "content": [{"type": "text", "text": "Look:"}, image_part(pngs[0]),
                                     {"type": "text", "text": "and"}, image_part(pngs[1])]},
        {"role": "assistant", "content": [image_part(pngs[2]), {"type": "text", "text": "This one?"}]},
        {"role": "user", "content": "What digit is this?"},
    ]
    answer = omni.chat.completions.create(model="micro", messages=messages, max_tokens=3, temperature=0)

    codec, tokenizer = load_image_codec(omni_dir), load_tokenizer(omni_dir)
    codes = codec.codes(np.stack([decode_image(p, codec.image_size, codec.channels) for p in pngs]))
    turns = [Turn("system", ("You read digits.",)), Turn("user", ("Look:", ImageCodes(codes[0]), "and", ImageCodes(codes[1]))),
             Turn("assistant", (ImageCodes(codes[2]), "This one?")), Turn("user", ("What digit is this?",))]
    expected, _ = encode_chat(turns, tokenizer, codec.vocab)
    assert answer.usage.prompt_tokens == len(expected)
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_local_files_only_inside_allowed_folders_and_no_remote_fetch(omni, image_dir, tmp_path):
    inside = image_dir / "seven.png"
    inside.write_bytes(digit_png(7))
    for url in (str(inside), inside.as_uri()):
        answer = omni.chat.completions.create(model="micro", max_tokens=2, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])
        assert answer.usage.prompt_tokens > 22
    outside = tmp_path / "secret.png"
    outside.write_bytes(digit_png(8))
    for url, says in ((str(outside), "--allow-image-dir"), ("https://example.com/x.png", "--allow-remote-images")):
        with pytest.raises(openai.BadRequestError) as excinfo:
            omni.chat.completions.create(model="micro", max_tokens=2, messages=[
                {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image_url", "image_url": {"url": url}}]}])
        assert error_of(excinfo)["param"] == "messages[0].content[1]" and says in error_of(excinfo)["message"]


def _bomb() -> bytes:
    out = io.BytesIO()
    Image.new("L", (6000, 6000)).save(out, format="PNG")  # 36 M pixels that compress to a few KiB
    return out.getvalue()


def _wide() -> bytes:
    out = io.BytesIO()
    Image.new("L", (20_000, 1)).save(out, format="PNG")
    return out.getvalue()


BAD_IMAGES = {
    "not an image": (b"hello, not an image at all", "not an image"),
    "truncated": (digit_png(4, side=64)[:2000], "truncated"),
    "20,000 px wide": (_wide(), "20000x1"),
    "bomb": (_bomb(), "decompress to too many pixels"),
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_bad_images_are_400s_naming_the_part_and_the_server_keeps_serving(omni, name):
    data, says = BAD_IMAGES[name]
    with pytest.raises(openai.BadRequestError) as excinfo:
        omni.chat.completions.create(model="micro", max_tokens=2, messages=[
            {"role": "user", "content": "first"},
            {"role": "user", "content": [{"type": "text", "text": "What digit?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                                            + base64.b64encode(data).decode()}}]}])
    error = error_of(excinfo)
    assert error["param"] == "messages[1].content[1]" and says in error["message"], error
    assert omni.chat.completions.create(model="micro", max_tokens=2, messages=[
        {"role": "user", "content": [image_part(digit_png(5)), {"type": "text", "text": "ok?"}]}]).choices


def test_more_images_than_the_context_holds_is_a_400_naming_the_context(omni):
    with pytest.raises(openai.BadRequestError) as excinfo:
        omni.chat.completions.create(model="micro", max_tokens=2, messages=[
            {"role": "user", "content": [image_part(digit_png(i)) for i in range(30)]}])
    assert "context length is 512" in error_of(excinfo)["message"]
    assert omni.chat.completions.create(model="micro", max_tokens=2, messages=[{"role": "user", "content": "hi"}])


def forced_image(omni_dir) -> dict:
    """A logit bias that makes the untrained model open an image at once (the engine then keeps the span well formed)."""
    tokenizer = load_tokenizer(omni_dir)
    return {str(tokenizer.special_ids["<|image_start|>"]): 100}


def test_images_in_answers_come_back_as_message_images_and_stream_deltas(omni, omni_dir):
    span = load_image_codec(omni_dir).vocab.span_length
    kwargs = dict(model="micro", max_tokens=span, temperature=0, logit_bias=forced_image(omni_dir),
                  messages=[{"role": "user", "content": "Draw the digit 3."}])
    message = omni.chat.completions.create(**kwargs).choices[0].message
    images = message.model_extra["images"]
    assert len(images) == 1 and images[0]["type"] == "image_url"
    whole = base64.b64decode(images[0]["image_url"]["url"].removeprefix("data:image/png;base64,"))
    assert png_side(whole) == (8, 8) and message.content == ""

    streamed = []
    for chunk in omni.chat.completions.create(stream=True, **kwargs):
        if chunk.choices and chunk.choices[0].delta.model_extra.get("images"):
            streamed += chunk.choices[0].delta.model_extra["images"]
    assert streamed == images  # greedy: the same image, sent once its span closed


def test_images_generations_n_sizes_formats_and_seed(omni_server):
    images = client(omni_server).images
    first = images.generate(model="micro", prompt="Draw the digit 3.", n=3, extra_body={"seed": 7})
    assert len(first.data) == 3 and all(png_side(base64.b64decode(d.b64_json)) == (8, 8) for d in first.data)
    again = images.generate(model="micro", prompt="Draw the digit 3.", n=3, extra_body={"seed": 7})
    assert [d.b64_json for d in again.data] == [d.b64_json for d in first.data]
    big = images.generate(model="micro", prompt="Draw the digit 3.", size="256x256", response_format="url")
    assert big.data[0].url.startswith("data:image/png;base64,")
    assert png_side(base64.b64decode(big.data[0].url.split(",", 1)[1])) == (256, 256)
    assert images.generate(model="micro", prompt="Draw the digit 1.", size="8x8").data[0].b64_json
    with pytest.raises(openai.BadRequestError) as excinfo:
        images.generate(model="micro", prompt="Draw the digit 3.", size="300x300")
    error = error_of(excinfo)
    assert error["param"] == "size" and "300x300" in error["message"] and "1024x1024" in error["message"]


def test_images_edits_multipart_and_xai_json(omni_server):
    edited = client(omni_server).images.edit(model="micro", image=("seven.png", digit_png(7), "image/png"),
                                             prompt="Flip this image horizontally.", n=2)
    assert len(edited.data) == 2 and png_side(base64.b64decode(edited.data[0].b64_json)) == (8, 8)
    response = httpx.post(f"{omni_server.url}/v1/images/edits", json={
        "model": "micro", "image": {"url": png_data_url(digit_png(7)), "type": "image_url"},
        "prompt": "Invert this image.", "response_format": "url"})
    assert response.status_code == 200 and response.json()["data"][0]["url"].startswith("data:image/png")
    bad = httpx.post(f"{omni_server.url}/v1/images/edits", json={
        "model": "micro", "image": {"url": "data:image/png;base64," + base64.b64encode(b"nope").decode()},
        "prompt": "Invert this image."})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "image"
    with pytest.raises(openai.BadRequestError) as excinfo:
        client(omni_server).images.edit(model="micro", image=("x.png", digit_png(1)[:30], "image/png"), prompt="Flip")
    assert error_of(excinfo)["param"] == "image"
    two = httpx.post(f"{omni_server.url}/v1/images/edits", data={"model": "micro", "prompt": "Flip"},
                     files=[("image[]", ("a.png", digit_png(1), "image/png")), ("image[]", ("b.png", b"nope", "image/png"))])
    assert two.status_code == 400 and two.json()["error"]["param"] == "image[1]"


def test_image_and_text_requests_decode_in_one_batch(omni_server, omni_dir):
    tokenizer = load_tokenizer(omni_dir)
    no_end = {str(i): -100 for i in tokenizer.stop_ids}  # both keep decoding until we have looked

    async def run():
        aclient = openai.AsyncOpenAI(base_url=f"{omni_server.url}/v1", api_key="unused", max_retries=0)
        common = dict(model="micro", max_tokens=400, stream=True, logit_bias=no_end)
        streams = [await aclient.chat.completions.create(messages=[
                       {"role": "user", "content": [image_part(digit_png(9)), {"type": "text", "text": "What digit?"}]}],
                       **common),
                   await aclient.chat.completions.create(messages=[{"role": "user", "content": "Say something."}],
                                                         **common)]
        for stream in streams:  # the role chunk, then a chunk of decoded text
            for _ in range(2):
                await stream.__anext__()
        running = await asyncio.to_thread(metric, omni_server, "hepta_requests_running")
        for stream in streams:
            await stream.close()
        await aclient.close()
        return running

    assert asyncio.run(run()) == 2


def test_a_text_model_refuses_images_naming_the_part(server):
    text = client(server)
    with pytest.raises(openai.BadRequestError) as excinfo:
        text.chat.completions.create(model="micro", max_tokens=2, messages=[
            {"role": "user", "content": [{"type": "text", "text": "hi"}, image_part(digit_png(1))]}])
    assert error_of(excinfo)["param"] == "messages[0].content[1]" and "text only" in error_of(excinfo)["message"]
    with pytest.raises(openai.BadRequestError) as excinfo:
        text.images.generate(model="micro", prompt="Draw the digit 3.")
    assert error_of(excinfo)["param"] == "model" and "does not write images" in error_of(excinfo)["message"]
    assert text.chat.completions.create(model="micro", max_tokens=2, messages=[{"role": "user", "content": "hi"}])


@pytest.mark.parametrize("body, param", [
    ({"model": "micro", "image": [], "prompt": "Invert this image."}, "image"),
    ({"model": "micro", "image": {"url": "https://example.com/a.png"}, "prompt": "Invert this image."}, "image"),
    ({"model": "micro", "image": {"url": "x"}}, "prompt"),
    ({"model": "micro", "prompt": "Draw the digit 3.", "n": 11}, "n"),
])
def test_bad_image_endpoint_bodies_are_400s_naming_the_field(omni_server, body, param):
    path = "edits" if "image" in body else "generations"
    response = httpx.post(f"{omni_server.url}/v1/images/{path}", json=body)
    assert response.status_code == 400 and response.json()["error"]["param"] == param, response.text


def test_image_requests_need_a_key_before_any_image_is_read_and_are_accounted(omni_dir, image_dir, tmp_path):
    from hepta.serve.keys import KeyStore

    store = KeyStore(tmp_path / "keys.db", create=True)
    raw = store.add("painter")
    store.close()
    server = start_server(omni_dir, api_keys=str(tmp_path / "keys.db"), allow_image_dirs=(str(image_dir),))
    try:
        for files in ({"image": ("x.png", digit_png(1), "image/png")}, None):
            response = httpx.post(f"{server.url}/v1/images/edits", files=files, data={"prompt": "Flip"} if files else None,
                                  json=None if files else {"image": {"url": str(image_dir / "seven.png")}, "prompt": "x"})
            assert response.status_code == 401
        drawn = client(server, api_key=raw).images.generate(model="micro", prompt="Draw the digit 3.", n=2)
        assert len(drawn.data) == 2
        with KeyStore(tmp_path / "keys.db") as keys:
            [row] = keys.usage_detail("painter")
        assert row.endpoint == "images.generations" and row.completion_tokens == 2 * 21
    finally:
        server.stop()


def test_remote_images_are_fetched_only_when_allowed(omni_dir, image_dir):
    import functools
    import http.server
    import threading

    (image_dir / "remote.png").write_bytes(digit_png(6))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(image_dir))
    files = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=files.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{files.server_address[1]}"
    server = start_server(omni_dir, allow_remote_images=True)
    try:
        remote = client(server)
        ask = lambda url: remote.chat.completions.create(model="micro", max_tokens=1, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}])
        assert ask(f"{base}/remote.png").usage.prompt_tokens > 22
        with pytest.raises(openai.BadRequestError) as excinfo:
            ask(f"{base}/missing.png")
        assert error_of(excinfo)["param"] == "messages[0].content[0]" and "404" in error_of(excinfo)["message"]
    finally:
        server.stop()
        files.shutdown()
