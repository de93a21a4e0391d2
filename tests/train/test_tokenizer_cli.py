"""`hepta tokenizer train image`: a folder of images (or the bundled digits) -> an image tokenizer folder."""

import json

import numpy as np
from helpers import run_cli

from hepta.modality.image_io import encode_png
from hepta.modality.image_tokenizer import ImageTokenizer


def test_trains_on_a_folder_of_images_and_reports_held_out_psnr(tmp_path):
    images = tmp_path / "images" / "nested"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(30):  # blobs: something an autoencoder can learn in a few steps
        pixels = np.zeros((1, 16, 16), dtype=np.float32)
        y, x = rng.integers(2, 12, size=2)
        pixels[0, y:y + 4, x:x + 4] = 1.0
        (images / f"{i}.png").write_bytes(encode_png(pixels))
    out = tmp_path / "tok"
    result = run_cli("tokenizer", "train", "image", "--data", str(tmp_path / "images"), "--out", str(out),
                     "--steps", "60", "--image-size", "16", "--levels", "4,4", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["codebook_size"] == 16 and report["grid"] == [8, 8]
    assert report["evaluated_on"] == "held-out images of the folder" and 0 < report["num_val_images"] < 30
    assert report["psnr_db"] > 5
    assert (out / "reconstructions.png").is_file()
    assert ImageTokenizer.load(out).config.image_size == 16


def test_bad_settings_and_folders_get_one_sentence(tmp_path):
    result = run_cli("tokenizer", "train", "image", "--data", str(tmp_path), "--out", str(tmp_path / "o"))
    assert result.returncode == 1 and "not a folder holding PNG or JPEG images" in result.stderr
    result = run_cli("tokenizer", "train", "image", "--out", str(tmp_path / "o"), "--levels", "5,1")
    assert result.returncode == 1 and "levels must be" in result.stderr and "Traceback" not in result.stderr
