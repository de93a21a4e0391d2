import torch
import torch.nn.functional as F

from hepta.checkpoint import build_model
from hepta.config import get_preset
from hepta.train.parallel.checkpointing import apply_activation_checkpointing
from helpers import micro_overrides, random_ids


def _step(model, ids):
    logits = model(ids[:, :-1])
    loss = F.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()) + model.router_loss()
    loss.backward()
    return loss


def test_checkpointed_blocks_give_the_same_loss_gradients_and_expert_load():
    cfg = get_preset("tiny").with_changes(micro_overrides())
    plain, checkpointed = build_model(cfg, seed=0), build_model(cfg, seed=0)
    apply_activation_checkpointing(checkpointed)
    ids = random_ids(cfg.vocab_size, 4, 33, seed=1)
    torch.testing.assert_close(_step(checkpointed, ids), _step(plain, ids))
    for (name, p), q in zip(plain.named_parameters(), checkpointed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)
    # the forward recomputed in backward records neither load nor router loss a second time
    for a, b in zip(plain.moe_layers(), checkpointed.moe_layers()):
        assert a.load_since_update.sum() == ids[:, :-1].numel() * cfg.moe.top_k
        torch.testing.assert_close(b.load_since_update, a.load_since_update)
        torch.testing.assert_close(b.last_load, a.last_load)


def test_checkpointing_keeps_fewer_activations():
    cfg = get_preset("tiny").with_changes(micro_overrides())
    ids = random_ids(cfg.vocab_size, 4, 65, seed=1)

    def saved_bytes(model) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(ids[:, :-1]).sum()
        return total

    model = build_model(cfg, seed=0)
    before = saved_bytes(model)
    apply_activation_checkpointing(model)
    assert saved_bytes(model) < before / 2
