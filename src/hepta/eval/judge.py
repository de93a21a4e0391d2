"""The independent judge of drawn and edited digits: a scikit-learn classifier that is no part of
the model, trained only on the training 80% of the digits (the model's own training images)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hepta.modality import digits

# An RBF support-vector machine on raw pixels. C and gamma were chosen by 5-fold cross-validation
# on the training 80% alone (C in 1-30, gamma in 0.05-0.5): 0.981 cross-validated accuracy.
JUDGE_C = 3.0
JUDGE_GAMMA = 0.2


@dataclass
class Judge:
    classifier: object
    accuracy_on_originals: float  # on the held-out scans themselves: the ceiling of what it can confirm

    def read(self, images: np.ndarray) -> np.ndarray:
        """The digit each image [N, 1, 8, 8] in [0, 1] shows."""
        return self.classifier.predict(_flat(images))


def _flat(images: np.ndarray) -> np.ndarray:
    return np.asarray(images, dtype=np.float32).reshape(len(images), -1)


@lru_cache(maxsize=1)
def digit_judge() -> Judge:
    from sklearn.svm import SVC

    train, held_out = digits.load_digits_split("train"), digits.load_digits_split("held_out")
    classifier = SVC(C=JUDGE_C, gamma=JUDGE_GAMMA).fit(_flat(train.images), train.labels)
    return Judge(classifier, float(np.mean(classifier.predict(_flat(held_out.images)) == held_out.labels)))
