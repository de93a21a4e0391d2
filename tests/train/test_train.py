import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import hepta
from hepta.errors import HeptaError
from hepta.tokenizer import Tokenizer
from hepta.train.loop import TrainArgs, Trainer
from hepta.train.report import read_metrics
from hepta.train.state import checkpoint_step, latest_checkpoint
from helpers import micro_overrides, micro_set_flags


def args_for(out: Path, corpus: Path, **kw) -> TrainArgs:
    base = dict(out=str(out), data=str(corpus), overrides=micro_overrides(), steps=12, batch_size=4, seq_len=64,
                save_every=4, eval_every=4, eval_batches=2, lr=3e-3, warmup=2)
    return TrainArgs(**{**base, **kw})


def train_losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if r["kind"] == "train"}


def test_training_lowers_validation_loss_and_writes_a_loadable_folder(tmp_path, corpus):
    result = Trainer(args_for(tmp_path / "run", corpus, steps=40, eval_every=20)).run(quiet=True)
    assert result.val_loss_after < result.val_loss_before - 0.5
    run = tmp_path / "run"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "training.png"):
        assert (run / name).is_file(), name
    model, tok = hepta.load(run), Tokenizer.load(run)
    assert model(torch.tensor([tok.encode("import os")])).shape[-1] == model.config.vocab_size
    rows = read_metrics(run)
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == list(range(1, 41))
    assert len(train_rows[0]["expert_load"]) == model.config.num_moe_layers
    assert all(r["tokens_per_s"] > 0 and r["grad_norm"] > 0 for r in train_rows)


def test_same_seed_same_losses_and_gradient_accumulation_matches_bigger_batch(tmp_path, corpus):
    a = Trainer(args_for(tmp_path / "a", corpus, steps=3)).run(quiet=True)
    b = Trainer(args_for(tmp_path / "b", corpus, steps=3)).run(quiet=True)
    assert train_losses(a.out) == train_losses(b.out)
    c = Trainer(args_for(tmp_path / "c", corpus, steps=3, grad_accum=2, batch_size=2)).run(quiet=True)
    assert len(train_losses(c.out)) == 3


def test_repeat_rows_train_beside_the_text_and_are_logged(tmp_path, corpus):
    plain = Trainer(args_for(tmp_path / "plain", corpus, steps=3)).run(quiet=True)
    result = Trainer(args_for(tmp_path / "repeat", corpus, steps=3, repeat_rows=4, repeat_symbols=50)).run(quiet=True)
    rows = [r for r in read_metrics(result.out) if r["kind"] == "train"]
    assert all(r["repeat_loss"] > 0 for r in rows)
    assert all("repeat_loss" not in r for r in read_metrics(plain.out) if r["kind"] == "train")
    assert train_losses(result.out)[1] == train_losses(plain.out)[1]  # the same text batch; only its update differs


def test_bf16_autocast_trains(tmp_path, corpus):
    result = Trainer(args_for(tmp_path / "run", corpus, steps=20, bf16=True)).run(quiet=True)
    assert result.val_loss_after < result.val_loss_before


def test_jsonl_corpus_and_empty_corpus(tmp_path, corpus):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"text": f.read_text()}) + "\n" for f in sorted(corpus.iterdir())))
    Trainer(args_for(tmp_path / "run", data, steps=2)).run(quiet=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(HeptaError, match="holds no text"):
        Trainer(args_for(tmp_path / "run2", empty))


def test_a_new_run_never_overwrites_an_existing_one(tmp_path, corpus):
    Trainer(args_for(tmp_path / "run", corpus, steps=4)).run(quiet=True)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    with pytest.raises(HeptaError, match="already holds a training run"):
        Trainer(args_for(tmp_path / "run", corpus, steps=8))
    after = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert before == after


def _cli_train(out: Path, corpus: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hepta", "train", "--out", str(out), "--data", str(corpus), *micro_set_flags(),
            "--steps", "12", "--batch-size", "4", "--seq-len", "64", "--save-every", "2", "--eval-every", "4",
            "--eval-batches", "2", "--lr", "3e-3", "--warmup", "2", "--quiet", *extra]


def _saving(run: Path) -> bool:
    return any(p.is_dir() and p.name.endswith(".tmp") for p in (run / "train_state").iterdir())


def test_killed_mid_save_then_resumed_gives_the_losses_of_an_uninterrupted_run(tmp_path, corpus):
    reference = tmp_path / "reference"
    subprocess.run(_cli_train(reference, corpus), check=True, capture_output=True)

    run = tmp_path / "run"
    proc = subprocess.Popen(_cli_train(run, corpus), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    caught_mid_save = False
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        # once one checkpoint is complete, wait for the next to be half written, then kill
        if latest_checkpoint(run) is not None and _saving(run):
            os.kill(proc.pid, signal.SIGKILL)
            caught_mid_save = True
            break
        time.sleep(0.001)
    proc.wait()
    assert caught_mid_save, "the run finished before a save could be interrupted"
    assert _saving(run)  # the half-written save is still there
    interrupted_at = checkpoint_step(latest_checkpoint(run))
    assert 0 < interrupted_at < 12

    hepta.load(run)  # the previous checkpoint's weights still open
    subprocess.run(_cli_train(run, corpus, "--resume"), check=True, capture_output=True)
    resumed, uninterrupted = train_losses(run), train_losses(reference)
    assert sorted(resumed) == list(range(1, 13))
    for step in range(1, 13):
        assert resumed[step] == pytest.approx(uninterrupted[step], abs=1e-6), step
    torch.testing.assert_close(hepta.load(run).state_dict(), hepta.load(reference).state_dict(), atol=1e-6, rtol=0)


def test_a_folder_with_leftovers_of_a_run_that_died_before_its_first_checkpoint_is_refused(tmp_path, corpus):
    trainer = Trainer(args_for(tmp_path / "run", corpus, steps=4, save_every=100))
    trainer.train_step()  # dies here: config, tokenizer and args written, no checkpoint
    with pytest.raises(HeptaError, match="unfinished run"):
        Trainer(args_for(tmp_path / "run", corpus, steps=2, overrides={**micro_overrides(), "vocab_size": 640}))


def test_a_crash_while_saving_the_final_weights_is_repaired_by_resume(tmp_path, corpus, monkeypatch):
    reference = Trainer(args_for(tmp_path / "reference", corpus, steps=4, save_every=2)).run(quiet=True)

    import hepta.train.loop as loop

    real_save_weights = loop.save_weights

    def crash_at_step_4(model, folder):
        if trainer.step == 4:
            raise KeyboardInterrupt("killed while writing the final weights")
        real_save_weights(model, folder)

    trainer = Trainer(args_for(tmp_path / "run", corpus, steps=4, save_every=2))
    monkeypatch.setattr(loop, "save_weights", crash_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(quiet=True)
    monkeypatch.setattr(loop, "save_weights", real_save_weights)
    assert latest_checkpoint(tmp_path / "run").name == "step_00000002"  # the state is the commit point
    Trainer(args_for(tmp_path / "run", corpus, steps=4, save_every=2), resume=True).run(quiet=True)
    torch.testing.assert_close(hepta.load(tmp_path / "run").state_dict(), hepta.load(reference.out).state_dict(),
                               atol=1e-6, rtol=0)


@pytest.mark.parametrize("flag, value", [("clip", -1.0), ("weight_decay", -0.1), ("max_corpus_mb", 0.0), ("steps", 0),
                                         ("repeat_rows", -1), ("repeat_symbols", 1)])
def test_invalid_training_options_are_refused(tmp_path, corpus, flag, value):
    with pytest.raises(HeptaError, match=flag.replace("_", "-")):
        args_for(tmp_path / "run", corpus, **{flag: value})


def test_resume_with_fewer_steps_than_done_is_refused_and_more_steps_are_kept(tmp_path, corpus):
    Trainer(args_for(tmp_path / "run", corpus, steps=4, save_every=2)).run(quiet=True)
    with pytest.raises(HeptaError, match="below the checkpoint"):
        Trainer(args_for(tmp_path / "run", corpus, steps=2), resume=True)
    Trainer(args_for(tmp_path / "run", corpus, steps=6, save_every=2), resume=True).run(quiet=True)
    from hepta.train.loop import load_args

    assert load_args(tmp_path / "run").steps == 6
    assert sorted(train_losses(tmp_path / "run")) == list(range(1, 7))


def test_overrides_take_dotted_names_and_the_flat_names_earlier_runs_saved(tmp_path, corpus):
    dotted = args_for(tmp_path / "a", corpus, overrides={"moe.num_experts": 8, "rope.theta": 5e5, "num_layers": 3})
    flat = args_for(tmp_path / "b", corpus, overrides={"num_experts": 8, "rope_theta": 5e5, "num_layers": 3})
    cfg = dotted.model_config()
    assert flat.model_config() == cfg
    assert (cfg.moe.num_experts, cfg.rope.theta, cfg.num_layers) == (8, 5e5, 3)
    with pytest.raises(ValueError, match="'num_experts' and 'moe.num_experts' both set ModelConfig.moe.num_experts"):
        args_for(tmp_path / "c", corpus, overrides={"num_experts": 8, "moe.num_experts": 4}).model_config()
