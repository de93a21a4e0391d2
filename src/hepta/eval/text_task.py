"""The `text` task: validation loss (nats/token) on the embedded corpus's validation split, over
the same windows for every model, so a multimodal run and its text-only baseline compare directly."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F

from hepta.errors import HeptaError
from hepta.train.data import Documents, batch_generator, sample_batch, stdlib_documents, tokenize, user_documents
from hepta.train.loop import ARGS_FILE

TEXT_EVAL_BATCHES = 32  # 32 x 8 windows of 256 tokens: 65k tokens
TEXT_EVAL_BATCH_SIZE = 8
EVAL_SEED = 0  # the windows do not depend on the run's seed, so any two runs are compared on the same text


def _run_args(folder: Path) -> dict:
    path = folder / ARGS_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def text_documents(folder: Path) -> Documents:
    """The validation split of the corpus the run in `folder` trained on (the default corpus otherwise)."""
    args = _run_args(folder)
    data = args.get("data")
    if data and Path(data).is_dir():
        return user_documents(data)
    mb = args.get("max_corpus_mb")
    return stdlib_documents(int(mb * 1e6) if mb else None)


@torch.no_grad()
def text_loss(model, tokenizer, docs: Documents, seq_len: int = 256, batch_size: int = TEXT_EVAL_BATCH_SIZE,
              num_batches: int = TEXT_EVAL_BATCHES) -> float:
    if seq_len > model.config.max_seq_len:
        raise HeptaError(f"the model's context of {model.config.max_seq_len} tokens is shorter than the {seq_len}-token "
                         "evaluation windows")
    stream = tokenize(Documents(train=[], val=docs.val, source=docs.source), tokenizer).val
    losses = []
    for i in range(num_batches):
        x, y = sample_batch(stream, batch_size, seq_len, batch_generator(EVAL_SEED, -1, i))
        logits = model(x)
        losses.append(F.cross_entropy(logits.float().flatten(0, 1), y.flatten()).item())
    return sum(losses) / len(losses)
