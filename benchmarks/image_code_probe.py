"""How well a plain classifier reads a digit from its image codes, one-hot against FSQ coordinates.

The gap between the two is why image-code embeddings start from the codes' coordinates
(`modality/code_embedding.py`): the same codes are far easier to generalise from when codes that
decode alike are represented alike. Trained on the training 80% of the digits, scored on the
held-out 20%.

    python benchmarks/image_code_probe.py --model runs/omni
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.svm import SVC

from hepta.modality import digits
from hepta.modality.code_embedding import code_coordinates
from hepta.modality.image_tokenizer import load_image_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder with image_tokenizer/, or the tokenizer folder")
    args = parser.parse_args()
    tokenizer = load_image_tokenizer(args.model)
    train, held_out = digits.load_digits_split("train"), digits.load_digits_split("held_out")
    coordinates_KC = code_coordinates(tokenizer.quantizer).numpy()
    num_codes = tokenizer.config.codebook_size

    def codes(split: digits.Digits) -> np.ndarray:
        with torch.no_grad():
            return tokenizer.encode(torch.as_tensor(split.images, dtype=torch.float32)).flatten(1).numpy()

    def one_hot(codes_NP: np.ndarray) -> np.ndarray:
        return np.eye(num_codes)[codes_NP].reshape(len(codes_NP), -1)

    def coordinates(codes_NP: np.ndarray) -> np.ndarray:
        return coordinates_KC[codes_NP].reshape(len(codes_NP), -1)

    train_codes, held_out_codes = codes(train), codes(held_out)
    scores = {}
    for name, features in (("one_hot", one_hot), ("coordinates", coordinates)):
        x_train, x_held_out = features(train_codes), features(held_out_codes)
        for judge_name, judge in (("logistic", LogisticRegression(C=1.0, max_iter=5000)), ("svc", SVC(gamma="scale"))):
            scores[f"{judge_name}_{name}"] = round(judge.fit(x_train, train.labels).score(x_held_out, held_out.labels), 4)
    print(json.dumps(scores))


if __name__ == "__main__":
    main()
