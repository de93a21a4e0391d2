"""The repeat task: only the second copy is a target, and the accuracy tells a model that looks
back and copies from one that does not."""

import torch
import torch.nn.functional as F

from hepta.train.conversations import IGNORE
from hepta.train.repeat_task import repeat_accuracy, repeat_batch


def test_only_the_repeat_is_a_target_and_it_is_the_first_half_again():
    x, y = repeat_batch((10, 20), torch.Generator().manual_seed(0), rows=4, lengths=(7, 7))
    assert x.shape == y.shape == (4, 13)
    assert (y[:, :7] == IGNORE).all()
    assert torch.equal(y[:, 7:], x[:, 1:7])  # from the repeat's first token on, what followed it before
    assert ((x >= 10) & (x < 20)).all()


def test_accuracy_is_one_for_a_look_up_and_near_zero_for_a_guess():
    def copier(ids):  # predicts, at each position, what followed the token's first occurrence
        logits = torch.zeros(*ids.shape, 64)
        for b, row in enumerate(ids.tolist()):
            for t, token in enumerate(row):
                first = row.index(token)
                if first < t and first + 1 < len(row):
                    logits[b, t, row[first + 1]] = 1.0
        return logits

    assert repeat_accuracy(copier, (0, 64), length=20) > 0.9  # collisions in the first half cost a little
    assert repeat_accuracy(lambda ids: F.one_hot(ids, 64).float(), (0, 64), length=20) < 0.1
