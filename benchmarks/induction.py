"""Does the architecture learn to copy from its context? hepta's `tiny` vs transformers' Llama of
the same size, both from scratch, trained on random tokens written twice.

    .venv/bin/python benchmarks/induction.py [--steps 1000] [--symbols 100] [--model runs/omni] [--smear] [--no-llama]
        [--preset omni-tiny]

Nothing but an induction head (look back for the earlier occurrence of the token just read, copy
what followed it) predicts the repeat, so the loss sits at log(symbols) until one forms, then falls
within a hundred steps or so. Both models get the same batches (`train/repeat_task.py`), AdamW at
lr 1e-3, and every 100 steps print the share of a fresh repeat of 50 tokens they predict. The
transformers model is a `LlamaForCausalLM` with the same width, depth, heads and dense hidden size
(hepta's `tiny` has experts instead: its layers beyond the first are MoE). With `--model` it also
prints how much of a repeat a trained hepta folder predicts, over its whole text vocabulary.

With `--smear`, a third model: hepta's `tiny` whose input embeddings each take in a gated share of
the previous token's (x_t + lambda * sigmoid(w . x_t) * x_{t-1}, lambda starting at 0; the "smear" of
the modded-nanogpt speedruns, after the smeared keys of Olsson et al., 2022). A key then carries the
token before it, so one attention layer can match "the token I just read" against "the token before
you" and copy: the look-up needs no second layer to compose with. Measured, it formed about when the
plain model's did (docs/multimodal.md), so hepta's model does not have it.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from hepta.checkpoint import build_model
from hepta.config.presets import get_preset
from hepta.train.conversations import IGNORE
from hepta.train.repeat_task import repeat_accuracy, repeat_batch

FIRST_SYMBOL = 300  # the repeated ids are FIRST_SYMBOL .. FIRST_SYMBOL + symbols (plain text tokens)


def llama_like(cfg):
    from transformers import LlamaConfig, LlamaForCausalLM

    attention = cfg.attention
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.dim, intermediate_size=cfg.moe.dense_hidden_dim,
        num_hidden_layers=cfg.num_layers, num_attention_heads=attention.num_heads,
        num_key_value_heads=attention.num_kv_heads, head_dim=attention.head_dim, max_position_embeddings=512))


class SmearedEmbedding(nn.Module):
    """An embedding whose each row takes in a gated share of the previous position's (no cache: whole sequences)."""

    def __init__(self, embed: nn.Embedding, gate_width: int = 12):
        super().__init__()
        self.embed, self.gate_width = embed, gate_width
        self.gate = nn.Linear(gate_width, 1)
        self.smear_lambda = nn.Parameter(torch.zeros(()))
        self.weight = embed.weight  # what the model reads its dtype and device from

    def forward(self, ids_BT: torch.Tensor) -> torch.Tensor:
        x_BTD = self.embed(ids_BT)
        gate_BT1 = self.smear_lambda * torch.sigmoid(self.gate(x_BTD[:, 1:, :self.gate_width]))
        return torch.cat([x_BTD[:, :1], x_BTD[:, 1:] + gate_BT1 * x_BTD[:, :-1]], dim=1)


def train(name: str, model, logits_of, extra_loss, steps: int, symbols: tuple[int, int]) -> None:
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.95))
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        x, y = repeat_batch(symbols, torch.Generator().manual_seed(step))
        loss = F.cross_entropy(logits_of(x).flatten(0, 1), y.flatten(), ignore_index=IGNORE) + extra_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % 100 == 0:
            model.eval()
            right = repeat_accuracy(logits_of, symbols)
            model.train()
            print(f"{name} step {step + 1}: loss {loss.item():.3f}, repeat predicted {right:.2f}, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--symbols", type=int, default=100, help="how many distinct ids the random tokens use")
    p.add_argument("--model", help="a trained hepta folder to test for a repeat over its text vocabulary")
    p.add_argument("--smear", action="store_true", help="also train hepta tiny with smeared input embeddings")
    p.add_argument("--no-llama", action="store_true", help="leave out the transformers model")
    p.add_argument("--preset", default="tiny", help="the hepta preset trained from scratch (default tiny, its "
                   "vocabulary cut to 512 ids; another keeps its own)")
    args = p.parse_args()
    if args.model:
        from hepta.loading import load, load_tokenizer

        model = load(args.model).eval()
        text = (0, load_tokenizer(args.model).layout.text_vocab_size)
        print(f"{args.model}: repeat of 50 random text tokens predicted {repeat_accuracy(model, text):.2f}")
    cfg = get_preset(args.preset)
    if args.preset == "tiny":
        cfg = cfg.with_changes({"vocab_size": 512})
    symbols = (FIRST_SYMBOL, FIRST_SYMBOL + args.symbols)
    hepta = build_model(cfg, seed=0)
    train(f"hepta {args.preset}", hepta, hepta, hepta.router_loss, args.steps, symbols)
    if args.smear:
        smeared = build_model(cfg, seed=0)
        smeared.embed = SmearedEmbedding(smeared.embed)
        train("hepta tiny, smeared", smeared, smeared, smeared.router_loss, args.steps, symbols)
    if not args.no_llama:
        llama = llama_like(cfg)
        train("transformers Llama", llama, lambda x: llama(x).logits, lambda: 0.0, args.steps, symbols)


if __name__ == "__main__":
    main()
