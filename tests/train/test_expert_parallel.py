"""Expert parallelism's hooks in one process (a 1-rank ep mesh on gloo): the wrapped module keeps
its class and global weight shapes, and gives the unwrapped module's output and gradients.
The 2-process runs against one process are in test_parallel.py."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor, Shard

from hepta.config import ModelConfig
from hepta.model.experts import GroupedExperts
from hepta.model.moe import MoE
from hepta.train.parallel.expert_parallel import ExpertParallel


@pytest.fixture
def ep_mesh():
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore())
    try:
        yield init_device_mesh("cpu", (1,), mesh_dim_names=("ep",))
    finally:
        dist.destroy_process_group()


def test_expert_parallel_wraps_the_unchanged_module_and_keeps_its_math(ep_mesh):
    torch.manual_seed(0)
    cfg = ModelConfig().with_changes({
        "vocab_size": 64, "dim": 32, "num_layers": 1, "attention.num_heads": 2, "attention.num_kv_heads": 1,
        "attention.head_dim": 16, "moe.num_experts": 4, "moe.top_k": 2, "moe.expert_hidden_dim": 24})
    plain = MoE(cfg)
    plain.reset_parameters()
    parallel = MoE(cfg)
    parallel.load_state_dict(plain.state_dict())
    ExpertParallel().apply(parallel.experts, ep_mesh)

    assert type(parallel.experts) is GroupedExperts
    for name, param in parallel.experts.named_parameters():
        assert isinstance(param, DTensor) and param.placements == (Shard(0),), name
        assert param.shape == getattr(plain.experts, name).shape  # global [E, ...], as checkpoints hold it
    with pytest.raises(RuntimeError, match="only be called once"):
        ExpertParallel().apply(parallel.experts, ep_mesh)

    x = torch.randn(2, 9, 32, requires_grad=True)
    out, ref = parallel(x), plain(x)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-6)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, [x, *parallel.parameters()], g)
    grads_ref = torch.autograd.grad(ref, [x, *plain.parameters()], g)
    for a, b in zip(grads, grads_ref):
        torch.testing.assert_close(a.full_tensor() if isinstance(a, DTensor) else a, b, atol=1e-6, rtol=1e-6)
