"""Resumable training state: model, optimizer, step and RNG in `train_state/`.

Written with torch.distributed.checkpoint, so the same files reshard across process counts.
Under torch.distributed every rank writes its own shards, and rank 0 commits the save once all
are written. Each save goes to `step_XXXXXXXX.tmp/`, is renamed to `step_XXXXXXXX/` only once complete,
and only then does the `latest` pointer move: a process killed at any moment leaves the
previous complete checkpoint in place and pointed to.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from hepta.errors import HeptaError
from hepta.fileio import atomic_write_text, fsync_dir

STATE_DIR = "train_state"
LATEST = "latest"
KEEP = 2  # complete checkpoints kept on disk


def _no_dist() -> bool:
    no_dist = not (dist.is_available() and dist.is_initialized())
    if no_dist:  # single-process runs are intended here; DCP warns about them on every call
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
    return no_dist


def _is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _step_dir(root: Path, step: int) -> Path:
    return root / f"step_{step:08d}"


def save_train_state(run_dir: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int) -> Path:
    """Write the state of every rank (collective under torch.distributed); rank 0 commits it."""
    root = run_dir / STATE_DIR
    final = _step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    if _is_main():
        root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # debris of an earlier killed save
    _barrier()  # no rank writes into the folder before the debris is gone
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd, "step": torch.tensor(step), "rng": torch.get_rng_state()}
    dcp.save(state, checkpoint_id=str(tmp), no_dist=_no_dist())
    # dcp.save returns on rank 0 only after every rank's files are written and the metadata
    # that lists them is in place, so rank 0 alone can commit.
    if _is_main():
        _commit(root, tmp, final)
    _barrier()  # every rank sees the new `latest` before it goes on
    return final


def _commit(root: Path, tmp: Path, final: Path) -> None:
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():  # the same step saved again: keep the old copy until the new one is in place
        stale = final.with_name(final.name + ".old")
        shutil.rmtree(stale, ignore_errors=True)
        final.rename(stale)
        tmp.rename(final)
        shutil.rmtree(stale, ignore_errors=True)
    else:
        tmp.rename(final)
    fsync_dir(root)
    atomic_write_text(root / LATEST, final.name + "\n")
    _prune(root, keep=final.name)


def _prune(root: Path, keep: str) -> None:
    complete = sorted(p for p in root.glob("step_*") if p.is_dir() and not p.name.endswith((".tmp", ".old")))
    for old in complete[:-KEEP]:
        if old.name != keep:
            shutil.rmtree(old, ignore_errors=True)


def checkpoint_step(checkpoint: Path) -> int:
    return int(checkpoint.name.split("_")[1].split(".")[0])


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint: the one `latest` names, else the highest complete step."""
    root = run_dir / STATE_DIR
    pointer = root / LATEST
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if (named / ".metadata").is_file():
            return named
    complete = sorted(p for p in root.glob("step_*")
                      if (p / ".metadata").is_file() and not p.name.endswith((".tmp", ".old")))
    if complete:
        return complete[-1]
    stale = sorted(p for p in root.glob("step_*.old") if (p / ".metadata").is_file())
    return stale[-1] if stale else None


def load_train_state(checkpoint: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore model, optimizer and RNG in place; return the step the checkpoint was taken at."""
    model_sd, optim_sd = get_state_dict(model, optimizer)
    state = {"model": model_sd, "optim": optim_sd, "step": torch.tensor(0), "rng": torch.get_rng_state()}
    try:
        dcp.load(state, checkpoint_id=str(checkpoint), no_dist=_no_dist())
    except Exception as e:  # DCP wraps storage errors in CheckpointException
        raise HeptaError(f"training state {checkpoint} cannot be read ({type(e).__name__}); "
                         "delete that folder to resume from the one before it") from e
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    torch.set_rng_state(state["rng"])
    return int(state["step"])
