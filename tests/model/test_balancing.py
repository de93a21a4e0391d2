import torch

import hepta


SHARE, SPREAD, ALIGN = 0.02, 0.2, 3.0


def skewed_model(bias_update_rate: float):
    cfg = hepta.get_preset("tiny").with_changes({
        "vocab_size": 256, "dim": 64, "num_layers": 2, "moe.num_dense_layers": 0, "attention.num_heads": 2,
        "attention.num_kv_heads": 1, "attention.head_dim": 32, "moe.num_experts": 8, "moe.top_k": 2,
        "moe.expert_hidden_dim": 32, "moe.num_shared_experts": 0,
        "router.aux_loss_coef": 0.0, "router.z_loss_coef": 0.0, "router.bias_update_rate": bias_update_rate,
    })
    model = hepta.build_model(cfg, seed=0)
    with torch.no_grad():
        # Deliberately skew every router: give all hidden states a shared direction (real LMs'
        # hidden states have one) and align experts 0 and 1 with it, so they score higher for
        # most tokens; the other rows are random so tokens still differ in what they prefer.
        common = torch.randn(cfg.dim, generator=torch.Generator().manual_seed(1))
        model.embed.weight += SHARE * common
        for moe in model.moe_layers():
            moe.router.weight.normal_(std=SPREAD, generator=torch.Generator().manual_seed(2))
            moe.router.weight[:2] += ALIGN * common / common.norm()
    return model


def max_over_mean(model) -> float:
    load = model.expert_load().float()
    return (load.max(dim=1).values / load.mean(dim=1)).mean().item()


def train(model, steps: int) -> list[float]:
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    history = []
    for _ in range(steps):
        ids = torch.randint(0, 256, (4, 32), generator=gen)
        logits = model(ids[:, :-1])
        torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
        opt.step()
        opt.zero_grad()
        model.update_expert_bias()
        history.append(max_over_mean(model))
    return history


def test_aux_loss_free_bias_lowers_max_over_mean_load_of_a_skewed_router():
    balanced = train(skewed_model(bias_update_rate=0.02), steps=60)
    unbalanced = train(skewed_model(bias_update_rate=0.0), steps=60)
    assert balanced[0] > 3.5 and unbalanced[0] > 3.5  # the skew is real: top-2 of 8 maxes out at 4
    late_balanced, late_unbalanced = sum(balanced[-10:]) / 10, sum(unbalanced[-10:]) / 10
    assert late_unbalanced > 3.3  # without the bias the skew stays
    assert late_balanced < 2.5 and late_balanced < 0.7 * late_unbalanced
    # and the bias only selected: the gate weights still come from the unbiased scores
    model = skewed_model(0.02)
    train(model, steps=5)
    moe = model.moe_layers()[0]
    x = torch.randn(10, 64)
    routing = moe.router(x)
    scores = torch.sigmoid(x @ moe.router.weight.T).gather(1, routing.experts_NK)
    torch.testing.assert_close(routing.weights_NK, scores / scores.sum(-1, keepdim=True))
