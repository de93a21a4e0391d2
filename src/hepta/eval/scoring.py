"""Scores of image answers against the held-out digits, kept apart from generation so they can be
checked on known outputs."""

from __future__ import annotations

import numpy as np

from hepta.eval.judge import Judge
from hepta.modality import digits


def recognition_accuracy(answers: list[str], labels: np.ndarray) -> float:
    """An answer is read as its first digit character; no digit counts as wrong."""
    read = [next((int(ch) for ch in answer if ch.isdigit()), -1) for answer in answers]
    return float(np.mean(np.array(read) == labels))


def generation_accuracy(judge: Judge, images: np.ndarray, requested: np.ndarray) -> float:
    return float(np.mean(judge.read(images) == requested))


def editing_scores(judge: Judge, edit: str, outputs: np.ndarray, originals: np.ndarray, labels: np.ndarray) -> dict:
    """`accuracy`: the judge, reading the output with the edit undone, finds the original digit;
    `mae`: mean absolute pixel error (0-1) against the exact edit of the original."""
    exact = digits.EDITS[edit](originals)
    return {"accuracy": float(np.mean(judge.read(digits.UNDO[edit](outputs)) == labels)),
            "mae": float(np.mean(np.abs(outputs - exact)))}
