"""Training text: the embedded default corpus, user corpora, tokenisation and batches.

The default corpus is the Python standard library's own source on this machine: real text
nobody here wrote, present wherever Python is, no download. Documents are split into train
and validation by a stable hash of their name, so the split never depends on file order.
"""

from __future__ import annotations

import json
import sysconfig
import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from hepta.errors import HeptaError
from hepta.tokenizer import Tokenizer

VAL_EVERY = 50  # about 1 document in 50 goes to validation


@dataclass
class Documents:
    train: list[str]
    val: list[str]
    source: str


def _is_val(name: str) -> bool:
    return zlib.crc32(name.encode()) % VAL_EVERY == 0


def _split(named_texts: list[tuple[str, str]], source: str) -> Documents:
    named_texts = [(n, t) for n, t in named_texts if t.strip()]
    if not named_texts:
        raise HeptaError(f"the corpus {source} holds no text; point --data at a folder of text files "
                         "or a JSONL file with a 'text' field")
    train = [t for n, t in named_texts if not _is_val(n)]
    val = [t for n, t in named_texts if _is_val(n)]
    if not val or not train:  # tiny corpora: keep both sides non-empty
        train = [t for _, t in named_texts]
        val = [train[-1]] if len(train) == 1 else [train.pop()]
    return Documents(train, val, source)


def stdlib_documents(max_bytes: int | None = None) -> Documents:
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(f for f in root.rglob("*.py") if "site-packages" not in f.parts and f.is_file())
    named, size = [], 0
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        named.append((str(f.relative_to(root)), text))
        size += len(text)
        if max_bytes is not None and size >= max_bytes:
            break
    return _split(named, f"Python {sysconfig.get_python_version()} standard library ({root})")


def user_documents(path: str | Path) -> Documents:
    path = Path(path)
    if not path.exists():
        raise HeptaError(f"--data {str(path)!r} does not exist; pass a folder of text files or a .jsonl file")
    if path.is_file():
        return _split(_read_jsonl(path), str(path))
    named = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        try:
            named.append((str(f.relative_to(path)), f.read_text(encoding="utf-8")))
        except UnicodeDecodeError:
            continue  # binary files in a text folder are skipped, not fatal
    return _split(named, str(path))


def _read_jsonl(path: Path) -> list[tuple[str, str]]:
    named = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise HeptaError(f"{path}:{line_no} is not valid JSON ({e.msg}); fix the line or remove it") from e
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise HeptaError(f"{path}:{line_no} has no string 'text' field; each line must be "
                                 '{"text": "..."}')
            named.append((f"{line_no}", record["text"]))
    return named


@dataclass
class TokenStream:
    train: torch.Tensor  # int32 [num_tokens]
    val: torch.Tensor


def tokenize(docs: Documents, tokenizer: Tokenizer) -> TokenStream:
    """Concatenate documents, each followed by <|endoftext|>, into one id stream per split."""
    def stream(texts: list[str]) -> torch.Tensor:
        ids: list[int] = []
        for doc_ids in tokenizer.encode_batch(texts):
            ids.extend(doc_ids)
            ids.append(tokenizer.eos_id)
        return torch.tensor(ids, dtype=torch.int32)
    return TokenStream(stream(docs.train), stream(docs.val))


def sample_batch(stream: torch.Tensor, batch_size: int, seq_len: int, generator: torch.Generator,
                 shard: tuple[int, int] = (0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows: inputs [B, T] and next-token targets [B, T].

    With shard=(index, count), the index-th of count equal row blocks of that same batch: the
    windows are drawn for the whole batch, so count processes together see exactly the batch
    one process would.
    """
    if stream.numel() <= seq_len + 1:
        raise HeptaError(f"the corpus has only {stream.numel()} tokens, fewer than one sequence of {seq_len + 1}; "
                         "add text or lower --seq-len")
    index, count = shard
    assert batch_size % count == 0, "the trainer checks that the batch splits evenly"
    starts = torch.randint(0, stream.numel() - seq_len - 1, (batch_size,), generator=generator)
    rows = batch_size // count
    windows = torch.stack([stream[s:s + seq_len + 1] for s in starts[index * rows:(index + 1) * rows].tolist()]).long()
    return windows[:, :-1], windows[:, 1:]


def batch_generator(seed: int, step: int, micro_step: int) -> torch.Generator:
    """The batch of a given step depends only on (seed, step, micro-step): resuming needs no
    saved data position beyond the step number."""
    return torch.Generator().manual_seed(seed * 1_000_003 + step * 1009 + micro_step)
