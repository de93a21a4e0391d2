"""`hepta generate --image/--image-out`: images read as a chat user turn, images written to PNG."""

from __future__ import annotations

import io

import numpy as np
import pytest
from helpers import run_cli
from omni_fixture import make_omni_folder
from PIL import Image
from test_cli import assert_one_line_error

from hepta.infer.image_prompt import image_chat_ids
from hepta.loading import load_image_codec, load_tokenizer
from hepta.modality.chat import encode_chat
from hepta.modality.digits import RECOGNISE_PROMPT, recognise_turns
from hepta.modality.image_io import decode_image, encode_png


@pytest.fixture(scope="module")
def omni_dir(tmp_path_factory):
    return make_omni_folder(tmp_path_factory.mktemp("omni") / "omni")


@pytest.fixture(scope="module")
def digit_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("in") / "digit.png"
    path.write_bytes(encode_png(np.random.default_rng(0).random((1, 8, 8), dtype=np.float32)))
    return path


def test_image_then_question_is_the_recognise_turn_of_training(omni_dir, digit_file):
    codec, tokenizer = load_image_codec(omni_dir), load_tokenizer(omni_dir)
    codes = codec.codes(decode_image(digit_file.read_bytes(), 8, 1)[None])[0]
    expected, _ = encode_chat(recognise_turns(codes), tokenizer, codec.vocab)
    assert image_chat_ids(codec, tokenizer, [str(digit_file)], RECOGNISE_PROMPT, draw=False) == expected
    drawn = image_chat_ids(codec, tokenizer, [], "Draw the digit 3.", draw=True)
    assert drawn[-1] == codec.vocab.start_id


def test_generate_draws_an_image_and_reads_one(omni_dir, digit_file, tmp_path):
    out = tmp_path / "drawn.png"
    proc = run_cli("generate", "--model", str(omni_dir), "--prompt", "Draw the digit 3.", "--image-out", str(out),
                   "--temperature", "0")
    assert proc.returncode == 0, proc.stderr
    assert Image.open(io.BytesIO(out.read_bytes())).size == (8, 8)

    proc = run_cli("generate", "--model", str(omni_dir), "--image", str(digit_file), "--image", str(digit_file),
                   "--prompt", RECOGNISE_PROMPT, "--max-tokens", "3", "--seed", "0")
    assert proc.returncode == 0, proc.stderr
    assert not proc.stdout.startswith(RECOGNISE_PROMPT)  # a chat answer, not the prompt continued


def test_generate_refuses_what_cannot_give_an_image(omni_dir, digit_file, tmp_path, model_dir_text):
    proc = run_cli("generate", "--model", str(omni_dir), "--image", str(digit_file), "--prompt", "Invert this image.",
                   "--image-out", str(tmp_path / "none.png"), "--max-tokens", "1")
    assert_one_line_error(proc, "fewer than the 21 tokens of one image")
    assert not (tmp_path / "none.png").exists()
    assert_one_line_error(run_cli("generate", "--model", str(omni_dir), "--image", str(tmp_path / "missing.png"),
                                  "--prompt", "x"), "missing.png")
    assert_one_line_error(run_cli("generate", "--model", str(model_dir_text), "--image", str(digit_file),
                                  "--prompt", "x"), "text only")


@pytest.fixture(scope="module")
def model_dir_text(tmp_path_factory):
    """A text-only model folder: the omni folder without its image tokenizer."""
    import shutil

    folder = make_omni_folder(tmp_path_factory.mktemp("text") / "text")
    shutil.rmtree(folder / "image_tokenizer")
    return folder
