"""Routing counts that have values under fake tensors, so the MoE forward runs in a dry run.

Fake tensors carry shapes, not values, and the MoE layer turns its expert load into Python
integers (split sizes of the dispatch, the all-to-all of counts between EP ranks). Under
this mode the load is real: every expert receives an equal share of the routed copies (the
balanced load the analytic plan assumes, and what the aux-loss-free bias steers towards),
every EP rank receives as many copies as it sends, and index arithmetic on such real
tensors stays real. Everything else, the activations in particular, stays fake.
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import FakeTensor, unset_fake_temporarily
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

aten, c10d = torch.ops.aten, torch.ops._c10d_functional
INDEX_SOURCES = (aten.arange.default, aten.arange.start, aten.arange.start_step)


class BalancedRouting(TorchDispatchMode):
    """Use inside a FakeTensorMode(allow_non_fake_inputs=True), innermost."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is aten.bincount.default:  # the router's load per expert
            x = args[0]
            num_experts = kwargs.get("minlength", args[2] if len(args) > 2 else 0)
            with unset_fake_temporarily():
                return torch.full((num_experts,), x.numel() // num_experts, dtype=torch.int64)
        flat, _ = tree_flatten((args, kwargs))
        tensors = [a for a in flat if isinstance(a, torch.Tensor)]
        real = not any(isinstance(t, FakeTensor) for t in tensors)
        if real and tensors and func is c10d.all_to_all_single.default:
            with unset_fake_temporarily():
                return args[0].clone()  # balanced: each rank receives the counts it sends
        if real and tensors and func is c10d.wait_tensor.default:
            return args[0]
        if real and (tensors or func in INDEX_SOURCES):
            with unset_fake_temporarily():
                return func(*args, **kwargs)
        return func(*args, **kwargs)
