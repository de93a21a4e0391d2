"""Image-code embeddings start with FSQ neighbours close together, at the text rows' scale."""

import torch

from hepta.modality.code_embedding import INIT_STD, code_coordinates, init_code_rows
from hepta.modality.fsq import FSQ
from hepta.modality.image_span import ImageVocab


def test_neighbouring_codes_start_closer_than_distant_ones_and_all_stay_distinct():
    fsq = FSQ((5, 5, 5))
    vocab = ImageVocab(start_id=10, end_id=11, row_id=12, code_start=40, num_codes=125, grid=4)
    table = torch.randn(200, 192) * INIT_STD
    before = table.clone()
    init_code_rows(table, vocab.code_start, fsq, seed=0)

    assert torch.equal(table[:40], before[:40]) and torch.equal(table[165:], before[165:])  # text and specials kept
    rows = table[40:165]
    assert abs(rows.std().item() - INIT_STD) < 0.1 * INIT_STD
    coordinates = code_coordinates(fsq)
    level_steps = (coordinates[:, None] - coordinates[None]).abs().sum(-1) * 2  # 1 = one level apart on one axis
    distances = torch.cdist(rows, rows)
    near, far = distances[level_steps == 1].mean(), distances[level_steps >= 6].mean()
    assert near < 0.8 * far
    assert distances[~torch.eye(125, dtype=torch.bool)].min() > 0.3 * near  # no two codes collapse onto one row


def test_same_seed_same_rows():
    fsq, vocab = FSQ((4, 4)), ImageVocab(0, 1, 2, 3, 16, 2)
    a, b = torch.zeros(19, 8), torch.zeros(19, 8)
    init_code_rows(a, vocab.code_start, fsq, seed=3)
    init_code_rows(b, vocab.code_start, fsq, seed=3)
    assert torch.equal(a, b) and not torch.equal(a[3:], torch.zeros(16, 8))
