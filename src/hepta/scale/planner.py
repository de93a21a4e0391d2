"""`hepta plan`: a parallel layout that fits memory, and what the run costs in days, bytes and megawatts.

Layout search. Tensor parallelism stays inside one NVLink domain (tp divides its size and the
model's head, FFN and vocabulary widths); pipeline stages split the layers; the data-parallel
rest is dp_replicate x fsdp, with expert parallelism inside the fsdp group. For every
(tp, pp, ep) the planner takes the smallest fsdp group of at least `min_shard_group` ranks
that divides dp and lets the step fit in `USABLE_HBM` of the GPU, first without, then with
activation checkpointing. (Smaller groups mean fewer ranks per collective, but each GPU then
owns more parameters and all-reduces 8 bytes per owned parameter across the replicas every
step; 4096 ranks, 512 nodes, keeps that small for trillion-parameter models.) Among the
layouts that fit it prefers, in order: the least wall time per token (compute stretched by
the pipeline bubble, plus the link time that overlapping with compute cannot hide), the
least model parallelism tp x pp (fewer small matmuls), no recomputation, fewer stages, then
the most expert parallelism (each rank gathers fewer expert weights per layer).

Days follow from the FLOPs and the MFU the user expects; the layout decides whether the
step fits and how much the links must carry to get there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from hepta.config import ModelConfig, count_params
from hepta.errors import HeptaError
from hepta.scale.comms import StepComms, step_comms
from hepta.scale.energy import DEFAULT_PUE, Energy, training_energy
from hepta.scale.flops import inference_flops_per_token, train_flops_per_token
from hepta.scale.gpus import GPU
from hepta.scale.inference import USABLE_HBM, Inference, inference_plan
from hepta.scale.memory import Layout, TrainMemory, divisors, tp_divides, train_memory

DEFAULT_MIN_SHARD_GROUP = 4096  # the smallest EP x FSDP group searched (see above)
MAX_PP = 64


@dataclass(frozen=True)
class PlanRequest:
    cfg: ModelConfig
    name: str
    gpus: int
    gpu: GPU
    tokens: float
    mfu: float = 0.4
    seq_len: int | None = None  # default: the pretraining context, at most 8192
    tp: int | None = None  # pinned degrees; None: searched
    pp: int | None = None
    ep: int | None = None
    fsdp: int | None = None
    batch_tokens: float | None = None  # cap on the global batch; None: one sequence per data-parallel rank
    min_shard_group: int = DEFAULT_MIN_SHARD_GROUP
    pue: float = DEFAULT_PUE
    decode_batch: int = 64

    @property
    def sequence_length(self) -> int:
        if self.seq_len is not None:
            return self.seq_len
        pretrain = self.cfg.rope.original_max_len if self.cfg.rope.type == "yarn" else self.cfg.max_seq_len
        return min(pretrain, 8192)


@dataclass(frozen=True)
class Fit:
    layout: Layout
    checkpointing: bool
    memory: TrainMemory
    comms: StepComms
    compute_seconds: float  # one step at the requested MFU

    microbatches: int = 1  # per data-parallel rank and step

    @property
    def bubble(self) -> float:
        return pipeline_bubble(self.layout.pp, self.microbatches)

    @property
    def exposed_comm_seconds(self) -> float:
        """Link time a perfectly overlapped step still cannot hide behind its compute."""
        return max(0.0, self.comms.all_to_all_seconds + self.comms.fsdp_seconds - self.compute_seconds)


@dataclass
class Plan:
    request: PlanRequest
    fit: Fit
    memory_without_ac: TrainMemory
    memory_with_ac: TrainMemory
    train_flops_per_token: float
    inference_flops_per_token: float
    train_days: float
    gpu_hours: float
    energy: Energy
    inference: Inference
    total_params: int = 0
    active_params: int = 0

    @property
    def microbatches(self) -> int:
        return self.fit.microbatches

    @property
    def step_seconds(self) -> float:
        return self.fit.compute_seconds

    @property
    def comms(self) -> StepComms:
        return self.fit.comms

    @property
    def global_batch_tokens(self) -> int:
        return self.fit.layout.dp * self.microbatches * self.request.sequence_length

    @property
    def steps(self) -> float:
        return self.request.tokens / self.global_batch_tokens

    @property
    def pipeline_bubble(self) -> float:
        return self.fit.bubble

    def as_dict(self) -> dict:
        r = self.request
        return {
            "preset": r.name, "gpu": r.gpu.name, "gpus": r.gpus, "tokens": r.tokens, "mfu": r.mfu,
            "seq_len": r.sequence_length, "batch_tokens_cap": r.batch_tokens,
            "total_params": self.total_params, "active_params": self.active_params,
            "layout": self.fit.layout.as_dict(), "activation_checkpointing": self.fit.checkpointing,
            "memory_per_gpu_bytes": self.fit.memory.total,
            "memory_per_gpu": self.fit.memory.as_dict(),
            "memory_without_activation_checkpointing": self.memory_without_ac.as_dict(),
            "memory_with_activation_checkpointing": self.memory_with_ac.as_dict(),
            "hbm_bytes": r.gpu.hbm_bytes,
            "microbatches_per_step": self.microbatches, "global_batch_tokens": self.global_batch_tokens,
            "optimizer_steps": self.steps, "pipeline_bubble": self.pipeline_bubble,
            "train_flops_per_token": self.train_flops_per_token,
            "inference_flops_per_token": self.inference_flops_per_token,
            "step_seconds": self.step_seconds, "train_days": self.train_days, "gpu_hours": self.gpu_hours,
            "comms_per_step": self.comms.as_dict(),
            **self.energy.as_dict(),
            "inference": self.inference.as_dict(),
        }


def pipeline_bubble(pp: int, microbatches: int) -> float:
    """Share of a 1F1B step the pipeline stages sit idle filling and draining."""
    return (pp - 1) / (microbatches + pp - 1)


def train_seconds(req: PlanRequest, tokens: float, gpus: int, bubble: float = 0.0) -> float:
    """Seconds `gpus` GPUs take to train on `tokens` tokens at the requested MFU: the MFU holds
    while the stages work, and the pipeline bubble adds idle time on top."""
    flops = train_flops_per_token(req.cfg, req.sequence_length)
    return tokens * flops / (gpus * req.gpu.bf16_flops * req.mfu) / (1 - bubble)


def tp_options(req: PlanRequest) -> list[int]:
    if req.tp is not None:
        return [req.tp]
    return [t for t in divisors(req.gpu.nvlink_domain) if tp_divides(req.cfg, t)]


def ep_options(req: PlanRequest) -> list[int]:
    if req.ep is not None:
        return [req.ep]
    return divisors(req.cfg.moe.num_experts) if req.cfg.has_moe else [1]


def microbatches(req: PlanRequest, layout: Layout) -> int:
    """Micro-batches of one sequence per data-parallel rank and step: as many as the batch cap
    allows (0: not even one fits under it), else pp (1F1B keeps pp in flight), at least 1."""
    if req.batch_tokens is None:
        return layout.pp
    return int(req.batch_tokens // (layout.dp * req.sequence_length))


def fits(req: PlanRequest, layout: Layout) -> Fit | None:
    budget = req.gpu.hbm_bytes * USABLE_HBM
    seq = req.sequence_length
    m = microbatches(req, layout)
    if m < 1:
        return None
    for checkpointing in (False, True):
        memory = train_memory(req.cfg, layout, seq, checkpointing)
        if memory.total <= budget:
            seconds = train_seconds(req, layout.dp * m * seq, req.gpus, pipeline_bubble(layout.pp, m))
            return Fit(layout, checkpointing, memory, step_comms(req.cfg, layout, req.gpu, seq, m, checkpointing),
                       seconds, m)
    return None


def candidate_fits(req: PlanRequest, gpus: int) -> list[Fit]:
    """The best-fitting layout for every (tp, pp, ep) on `gpus` GPUs."""
    found = []
    pps = [req.pp] if req.pp is not None else range(1, min(req.cfg.num_layers, MAX_PP) + 1)
    for tp in tp_options(req):
        for pp in pps:
            if gpus % (tp * pp):
                continue
            dp = gpus // (tp * pp)
            for ep in ep_options(req):
                groups = [req.fsdp] if req.fsdp is not None else divisors(dp)
                groups = [g for g in groups if g % ep == 0 and dp % g == 0
                          and (req.fsdp is not None or g >= min(req.min_shard_group, dp))]
                for group in groups:
                    fit = fits(req, Layout(tp, pp, ep, group, dp // group))
                    if fit:
                        found.append(fit)
                        break
    return found


def preference(fit: Fit) -> tuple:
    layout = fit.layout
    # wall time per token of a step: compute stretched by the pipeline bubble, plus the link
    # time compute cannot hide; layouts within 2% of each other count as equal
    tokens = layout.dp * fit.microbatches
    cost = (fit.compute_seconds + fit.exposed_comm_seconds) / tokens
    return round(math.log(cost) / math.log(1.02)), layout.tp * layout.pp, fit.checkpointing, layout.pp, \
        -layout.ep, layout.fsdp


def check_request(req: PlanRequest) -> None:
    cfg = req.cfg
    for name in ("gpus", "tp", "pp", "ep", "fsdp", "seq_len", "min_shard_group"):
        value = getattr(req, name)
        if value is not None and value < 1:
            raise HeptaError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    if not 0 < req.mfu <= 1:
        raise HeptaError(f"--mfu {req.mfu} is not a fraction of peak; give a value in (0, 1], e.g. 0.4")
    if req.batch_tokens is not None and req.batch_tokens < req.sequence_length:
        raise HeptaError(f"--batch-tokens {req.batch_tokens:g} is below one {req.sequence_length}-token sequence; "
                         f"give at least {req.sequence_length}, e.g. 64e6")
    if req.pue < 1:
        raise HeptaError(f"--pue {req.pue} is below 1; a facility uses at least the IT power, e.g. 1.2")
    if req.tokens <= 0:
        raise HeptaError(f"--tokens {req.tokens:g} must be positive, e.g. 30e12")
    if req.ep is not None:
        experts = cfg.moe.num_experts if cfg.has_moe else 1
        if experts % req.ep:
            near = sorted(divisors(experts), key=lambda d: (abs(d - req.ep), d))[:3]
            raise HeptaError(f"--ep {req.ep} does not divide {req.name}'s {experts} routed experts; "
                             f"nearest that do: {', '.join(map(str, sorted(near)))}")
    if req.tp is not None and not tp_divides(cfg, req.tp):
        near = [t for t in divisors(req.gpu.nvlink_domain) if tp_divides(cfg, t)]
        raise HeptaError(f"--tp {req.tp} does not divide {req.name}'s head, FFN and vocabulary widths; "
                         f"use one of {', '.join(map(str, near))}")
    if req.pp is not None and req.pp > cfg.num_layers:
        raise HeptaError(f"--pp {req.pp} exceeds the model's {cfg.num_layers} layers; use at most {cfg.num_layers}")
    unit = (req.tp or 1) * (req.pp or 1) * max(req.fsdp or 1, req.ep or 1)
    if req.fsdp is not None and req.ep is not None and req.fsdp % req.ep:
        raise HeptaError(f"--ep {req.ep} must divide the shard group --fsdp {req.fsdp}; "
                         f"nearest groups: {req.fsdp - req.fsdp % req.ep}, {req.fsdp + req.ep - req.fsdp % req.ep}")
    if req.gpus % unit:
        lower, upper = req.gpus - req.gpus % unit, req.gpus + unit - req.gpus % unit
        raise HeptaError(f"--gpus {req.gpus} is not a multiple of the layout's tp x pp x fsdp = {unit}; "
                         f"nearest GPU counts that are: {', '.join(str(n) for n in (lower, upper) if n > 0)}")


def choose_layout(req: PlanRequest) -> Fit:
    check_request(req)
    found = candidate_fits(req, req.gpus)
    if found:
        return min(found, key=preference)
    if req.batch_tokens is not None:
        uncapped = candidate_fits(replace(req, batch_tokens=None), req.gpus)
        if uncapped:
            least = min(uncapped, key=lambda fit: fit.layout.dp)
            need = least.layout.dp * req.sequence_length
            raise HeptaError(f"--batch-tokens {req.batch_tokens:g} is less than one {req.sequence_length}-token "
                             f"sequence per data-parallel rank in every layout that fits; the least is "
                             f"{need:,} tokens ({least.layout.describe()}): raise --batch-tokens to {need:g} "
                             f"or plan fewer GPUs")
    raise HeptaError(_nothing_fits(req))


def _nothing_fits(req: PlanRequest) -> str:
    """One sentence: why nothing fits, and the nearest requests that would."""
    from hepta.scale.gpus import GPUS

    tp = max(tp_options(req))
    smallest = min((train_memory(req.cfg, Layout(tp, pp, ep, req.gpus // (tp * pp), 1), req.sequence_length, True).total
                    for pp in ([req.pp] if req.pp else [1, 2, 4, 8]) for ep in ep_options(req)
                    if req.gpus % (tp * pp) == 0 and (req.gpus // (tp * pp)) % ep == 0), default=None)
    need = f"needs {smallest / 1e9:.0f} GB per GPU" if smallest else "has no layout"
    options = []
    for factor in (2 ** k for k in range(1, 15)):
        bigger = replace(req, gpus=req.gpus * factor)
        if candidate_fits(bigger, bigger.gpus):
            options.append(f"--gpus {bigger.gpus}")
            break
    for name, gpu in GPUS.items():
        if gpu.hbm_bytes > req.gpu.hbm_bytes and candidate_fits(replace(req, gpu=gpu), req.gpus):
            options.append(f"--gpu {name}")
            break
    seq = req.sequence_length // 2
    while seq >= 512:
        if candidate_fits(replace(req, seq_len=seq), req.gpus):
            options.append(f"--seq-len {seq}")
            break
        seq //= 2
    return (f"{req.name} does not fit on {req.gpus} {req.gpu.name.upper()}s of {req.gpu.hbm_bytes / 1e9:.0f} GB "
            f"even fully sharded with activation checkpointing ({need}, {USABLE_HBM:.0%} usable); "
            + (f"nearest that work: {' or '.join(options)}" if options else
               "no nearby GPU count, GPU or sequence length works; pin a layout with --tp/--pp/--ep/--fsdp"))


def make_plan(req: PlanRequest) -> Plan:
    fit = choose_layout(req)
    cfg, layout, seq = req.cfg, fit.layout, req.sequence_length
    count = count_params(cfg)
    hours = train_seconds(req, req.tokens, req.gpus, fit.bubble) / 3600
    return Plan(
        request=req, fit=fit,
        memory_without_ac=train_memory(cfg, layout, seq, False), memory_with_ac=train_memory(cfg, layout, seq, True),
        train_flops_per_token=train_flops_per_token(cfg, seq),
        inference_flops_per_token=inference_flops_per_token(cfg, seq),
        train_days=hours / 24, gpu_hours=hours * req.gpus,
        energy=training_energy(req.gpu, req.gpus, hours, req.pue),
        inference=inference_plan(cfg, req.gpu, seq, req.decode_batch),
        total_params=count.total, active_params=count.active,
    )


def days_for(req: PlanRequest, gpus: int, bubble: float = 0.0) -> float:
    """Training days on another GPU count at the same MFU and pipeline bubble (for the days-vs-GPUs chart)."""
    return train_seconds(req, req.tokens, gpus, bubble) / 86400
