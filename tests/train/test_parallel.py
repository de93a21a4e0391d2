"""Training on 2 processes (gloo on 127.0.0.1) against one process on the same global batch.

The 2-process runs go through torchrun, as users launch them: this file is also the worker
script (see the bottom), which runs several training runs in one process group so that the
processes start once. Every router loss is on: the Switch aux loss reads the load summed over
the ranks (so it is the same function of the global batch as in one process), z-loss is a mean
over rows, and the aux-loss-free bias is updated from the summed load.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hepta
from hepta.errors import HeptaError
from hepta.serve.runner import free_port
from hepta.train.loop import TrainArgs, Trainer
from hepta.train.report import read_metrics
from hepta.train.state import STATE_DIR, checkpoint_step, latest_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/helpers.py, also when run as the worker
from helpers import micro_overrides, micro_set_flags  # noqa: E402

STEPS, RESUME_AT = 5, 3
TOL = 1e-5  # fp32; the sums are ordered differently across processes


def micro_args(out: Path, corpus: Path, **kw) -> dict:
    base = dict(out=str(out), data=str(corpus), overrides=micro_overrides(), steps=STEPS,
                batch_size=4, seq_len=32, save_every=RESUME_AT, eval_every=STEPS, eval_batches=2, lr=3e-3, warmup=2)
    return {**base, **kw}


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"]


def torchrun(*args: str) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
            "--master-port", str(free_port()), *args]


def rewind(run_dir: Path, to: Path) -> Path:
    """A copy of a finished run with its last checkpoint removed, so that --resume starts at RESUME_AT."""
    shutil.copytree(run_dir, to)
    for checkpoint in (to / STATE_DIR).glob("step_*"):
        if checkpoint_step(checkpoint) > RESUME_AT:
            shutil.rmtree(checkpoint)
    assert checkpoint_step(latest_checkpoint(to)) == RESUME_AT
    return to


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus) -> Path:
    """One-process reference, then three 2-process runs in one torchrun launch."""
    root = tmp_path_factory.mktemp("parallel")
    Trainer(TrainArgs(**micro_args(root / "one", corpus))).run(quiet=True)
    Trainer(TrainArgs(**micro_args(root / "one_accum", corpus, batch_size=2, grad_accum=2))).run(quiet=True)
    rewind(root / "one", root / "one_then_two")
    scenarios = [
        {"args": micro_args(root / "ep2", corpus, ep=2), "resume": False},
        {"args": micro_args(root / "fsdp", corpus, ep=1, activation_checkpointing=True), "resume": False},
        # (with activation checkpointing: the recomputed blocks repeat their all-to-all in backward)
        {"args": micro_args(root / "one_then_two", corpus, ep=2, activation_checkpointing=True), "resume": True},
        {"args": micro_args(root / "bf16", corpus, ep=2, bf16=True), "resume": False},
        {"args": micro_args(root / "hsdp", corpus, dp_shard=1), "resume": False},
        {"args": micro_args(root / "accum", corpus, batch_size=2, grad_accum=2), "resume": False},
    ]
    proc = subprocess.run(torchrun(__file__, json.dumps(scenarios)), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_expert_parallel_run_gives_the_losses_of_one_process(runs):
    one, ep2 = losses(runs / "one"), losses(runs / "ep2")
    assert len(one) == len(ep2) == STEPS
    assert ep2 == pytest.approx(one, abs=TOL)
    rows = [r for r in read_metrics(runs / "ep2") if r["kind"] == "train"]
    reference = [r for r in read_metrics(runs / "one") if r["kind"] == "train"]
    # the load is the global batch's on every rank: the logged load equals one process's
    assert [r["expert_load"] for r in rows] == [r["expert_load"] for r in reference]
    assert [r["grad_norm"] for r in rows] == pytest.approx([r["grad_norm"] for r in reference], rel=1e-5)


def test_fsdp_run_with_activation_checkpointing_gives_the_losses_of_one_process(runs):
    assert losses(runs / "fsdp") == pytest.approx(losses(runs / "one"), abs=TOL)
    # the recomputation in backward does not count the load a second time
    assert [r["expert_load"] for r in read_metrics(runs / "fsdp") if r["kind"] == "train"] == \
        [r["expert_load"] for r in read_metrics(runs / "one") if r["kind"] == "train"]


def test_replicated_shards_and_gradient_accumulation_give_the_losses_of_one_process(runs):
    # --dp-shard 1: two full copies (HSDP with shards of one rank), experts split by ep=1
    assert losses(runs / "hsdp") == pytest.approx(losses(runs / "one"), abs=TOL)
    # one row per rank and micro-batch, two micro-batches per step
    assert losses(runs / "accum") == pytest.approx(losses(runs / "one_accum"), abs=TOL)


def test_the_exported_folder_of_a_2_process_run_loads_and_matches_one_process(runs):
    one = hepta.load(runs / "one")
    reference = one.state_dict()
    ids = torch.randint(0, one.config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(1))
    for name in ("ep2", "fsdp"):
        model = hepta.load(runs / name)
        got = model.state_dict()
        assert got.keys() == reference.keys()
        # AdamW moves a weight whose gradient is near zero by up to lr whatever the gradient's
        # last bits say, so single weights may differ by a fraction of lr (3e-3); logits of
        # about 1 in size then differ in their fifth digit
        torch.testing.assert_close(got, reference, atol=3e-4, rtol=0)
        with torch.no_grad():
            torch.testing.assert_close(model(ids), one(ids), atol=1e-4, rtol=0)
    bias = [k for k in reference if k.endswith("expert_bias")]
    assert bias and any(reference[k].abs().sum() > 0 for k in bias)  # the balancing bias moved, and alike


def test_bf16_mixed_precision_trains_close_to_fp32_and_keeps_fp32_weights(runs):
    # bf16 parameters and compute, fp32 gradient reduction and fp32 weights in the shards
    assert losses(runs / "bf16") == pytest.approx(losses(runs / "one"), abs=5e-3)
    assert losses(runs / "bf16") != pytest.approx(losses(runs / "one"), abs=TOL)  # it did run in bf16
    assert {t.dtype for t in hepta.load(runs / "bf16").state_dict().values()} == {torch.float32}


def test_a_1_process_checkpoint_resumes_on_2_processes(runs):
    assert losses(runs / "one_then_two") == pytest.approx(losses(runs / "one"), abs=TOL)


def test_a_2_process_checkpoint_resumes_on_1_process(runs, corpus, tmp_path):
    run = rewind(runs / "ep2", tmp_path / "two_then_one")
    assert len(list((run / STATE_DIR / f"step_{RESUME_AT:08d}").glob("*.distcp"))) == 2  # one file per rank
    Trainer(TrainArgs(**micro_args(run, corpus)), resume=True).run(quiet=True)
    assert losses(run) == pytest.approx(losses(runs / "one"), abs=TOL)


def test_layouts_that_do_not_fit_are_refused_with_the_ones_that_do():
    from hepta.train.parallel import ParallelLayout

    assert ParallelLayout.choose(8, 16) == ParallelLayout(8, 8, 8)
    assert ParallelLayout.choose(8, 6) == ParallelLayout(8, 8, 2)  # the largest ep dividing both
    assert ParallelLayout.choose(8, 16, dp_shard=4).dp_replicate == 2
    with pytest.raises(HeptaError, match=r"--ep 3 does not divide .* choose one of \[1, 2, 4, 8\]"):
        ParallelLayout.choose(8, 6, ep=3)
    with pytest.raises(HeptaError, match=r"--ep 4 does not divide the model's 6 experts; choose one of \[1, 2\]"):
        ParallelLayout.choose(8, 6, ep=4)
    with pytest.raises(HeptaError, match=r"--dp-shard 3 does not divide the 8 ranks"):
        ParallelLayout.choose(8, 6, dp_shard=3)


def test_parallel_options_without_torchrun_are_refused(tmp_path, corpus):
    with pytest.raises(HeptaError, match="needs several processes; launch with torchrun"):
        Trainer(TrainArgs(**micro_args(tmp_path / "run", corpus, ep=2)))


def _children(pid: int) -> list[int]:
    return [int(c) for task in Path(f"/proc/{pid}/task").iterdir()
            for c in (task / "children").read_text().split()]


def _rank_of(pid: int) -> int | None:
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return next((int(v.split(b"=")[1]) for v in environ if v.startswith(b"RANK=")), None)


def test_a_rank_killed_mid_save_leaves_the_last_checkpoint_which_resumes_the_same_losses(tmp_path, corpus, runs):
    run = tmp_path / "run"
    cli = ["-m", "hepta", "train", "--out", str(run), "--data", str(corpus), *micro_set_flags(),
           "--steps", str(STEPS), "--batch-size", "4", "--seq-len", "32",
           "--save-every", "1", "--eval-every", str(STEPS), "--eval-batches", "2", "--warmup", "2", "--quiet"]
    launcher = subprocess.Popen(torchrun(*cli), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True)
    killed = False
    deadline = time.time() + 120
    while time.time() < deadline and launcher.poll() is None and not killed:
        state = run / STATE_DIR
        saving = state.is_dir() and any(p.name.endswith(".tmp") for p in state.iterdir())
        if saving and latest_checkpoint(run) is not None:  # one checkpoint done, the next one half written
            for pid in _children(launcher.pid):
                if _rank_of(pid) == 1:
                    os.kill(pid, signal.SIGKILL)
                    killed = True
        time.sleep(0.001)
    try:
        launcher.wait(timeout=60)  # torchrun stops the other rank and fails
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    assert killed, "the run finished before a save could be interrupted"
    assert launcher.returncode != 0
    at = checkpoint_step(latest_checkpoint(run))
    assert 0 < at < STEPS
    hepta.load(run)  # the weights of the last complete checkpoint open

    # resumed by the same command on one process; the layout options may change on resume
    subprocess.run([sys.executable, *cli, "--resume", "--ep", "1"], check=True, capture_output=True, timeout=300)
    assert losses(run) == pytest.approx(losses(runs / "one"), abs=TOL)


if __name__ == "__main__":  # the worker torchrun starts: several runs in one process group
    import torch.distributed as dist

    dist.init_process_group("gloo")
    for scenario in json.loads(sys.argv[1]):
        Trainer(TrainArgs(**scenario["args"]), resume=scenario["resume"]).run(quiet=True)
    dist.destroy_process_group()
