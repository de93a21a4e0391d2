"""A modality tokenizer of a run: reused on resume, copied from a folder the user gives, or
trained in the run, with rank 0 doing the work and the other ranks reading its result."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, TypeVar

from hepta.errors import HeptaError

Tok = TypeVar("Tok")


def run_tokenizer(folder: Path, given: str | None, load: Callable[[Path | str], Tok], train: Callable[[], Tok],
                  kind: str, is_main: bool, barrier: Callable[[], None], resume: bool,
                  log: Callable[[str], None]) -> Tok:
    """The tokenizer in the run's `folder` (`kind`: "image", "audio"), made there first if need be."""
    if resume or not is_main:
        if not resume:
            barrier()  # rank 0 trains or copies it first
        if not folder.is_dir():
            raise HeptaError(f"{folder} is missing, so the run cannot go on; start a new run in another --out folder")
        return load(folder)
    if given:
        tokenizer = load(given)
        tokenizer.save(folder)
        log(f"{kind} tokenizer: {given} ({tokenizer.codebook_size} codes), copied into {folder}")
    else:
        tokenizer = train()
    barrier()
    return tokenizer
