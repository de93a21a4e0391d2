"""The inference engine: continuous batching over a slot KV cache.

One thread owns the model. Each loop iteration:
  1. drops cancelled requests (a client that went away frees its slots at once),
  2. admits waiting requests first come, first served, while slots are free, and prefills
     them together in one padded forward into fresh slots (a prompt that starts with a kept
     prefix, infer/prefix_cache.py, has that copied in and only its rest prefilled),
  3. runs one decode step for every running sequence, at each sequence's own position; a long
     prompt that arrived while they decode rides along, a chunk per step, packed into the
     same forward (SlotCache.set_packed).
Requests therefore join and leave the running batch at token boundaries. Running sequences
always occupy the lowest slots (a finished one's slot takes the last sequence), so a decode
step works on a view of the cache.

Memory is bounded up front: the KV budget buys a fixed number of slots of `max_model_len`
tokens each, and the prefix cache a pool of blocks beside them; requests beyond the slots wait
in a queue, and requests beyond the queue limit are refused (`QueueFull`) rather than growing
memory.

Dims: B running sequences, T prompt tokens (padded), V vocabulary, D model dim.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from hepta.errors import HeptaError
from hepta.infer.collect import Choice, Collector
from hepta.infer.constrain import allowed_masks
from hepta.infer.matvec_choice import choose_matvec
from hepta.infer.padding import pad_right
from hepta.infer.prefix_cache import PrefixCache
from hepta.infer.request import Event, Request, TokenLogprob
from hepta.infer.sampling import apply_penalties, sample_batch, sampleable, top_logprobs
from hepta.infer.stream_text import StreamingText
from hepta.modality.audio_span import AudioVocab
from hepta.modality.image_span import ImageVocab
from hepta.model import Transformer
from hepta.scale.flops import matmul_params
from hepta.tokenizer import TextTokenizer

log = logging.getLogger("hepta.engine")

MAX_TOP_LOGPROBS = 20  # OpenAI's limit


class QueueFull(HeptaError):
    """More requests are waiting than the engine's queue limit allows."""


class EngineStopped(HeptaError):
    """The engine has stopped and takes no more work."""


class InvalidRequest(HeptaError):
    """A request the engine cannot run as asked; `param` names the request field when one is at fault."""

    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.param = param


class ContextLengthExceeded(HeptaError):
    def __init__(self, prompt_tokens: int, max_tokens: int, limit: int):
        self.prompt_tokens, self.max_tokens, self.limit = prompt_tokens, max_tokens, limit
        super().__init__(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the prompt, {max_tokens} in the completion). "
            "Please reduce the length of the prompt or the completion.")


@dataclass(frozen=True)
class EngineConfig:
    max_num_seqs: int = 32  # sequences decoded together (slots), if the KV budget allows
    max_model_len: int | None = None  # prompt + completion tokens per sequence; default: the model's context
    kv_cache_bytes: int | None = None  # memory for the KV cache; default: max_num_seqs full-length slots
    max_queue: int = 256  # waiting requests before new ones are refused
    max_prefill_tokens: int = 8192  # padded prompt tokens prefilled in one forward (at least one request)
    # a prompt longer than this, arriving while others decode, is prefilled this many tokens a step, between
    # their decode steps, so that their streams do not stall behind it (None: whole prompts at once)
    prefill_chunk: int | None = 512
    # each chunk shares the running sequences' decode forward, packed with their tokens (False: a forward of its
    # own after theirs, which costs a second forward's fixed overhead every step)
    pack_prefill: bool = True
    # memory for prompt prefixes kept to be reused (infer/prefix_cache.py); None: a quarter of the KV cache's, 0: none
    prefix_cache_bytes: int | None = None

    def __post_init__(self) -> None:
        for name in ("max_num_seqs", "max_queue", "max_prefill_tokens"):
            if getattr(self, name) < 1:
                raise HeptaError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.prefix_cache_bytes is not None and self.prefix_cache_bytes < 0:
            raise HeptaError(f"prefix_cache_bytes must be 0 (off) or more, got {self.prefix_cache_bytes}")
        if self.prefill_chunk is not None and self.prefill_chunk < 1:
            raise HeptaError(f"prefill_chunk must be at least 1 or None, got {self.prefill_chunk}")


@dataclass(frozen=True)
class EngineLimits:
    """What a caller needs to know of a running engine to check requests before sending them
    (small and picklable: the API process gets it from the engine process)."""

    max_len: int  # prompt + completion tokens per sequence
    num_slots: int  # sequences decoded together
    vocab_size: int  # the model's (may exceed the tokenizer's)
    end_ids: frozenset[int]
    model_dim: int

    def check(self, prompt_tokens: int, max_tokens: int, n: int = 1) -> None:
        """Raises the error a request of this shape would get, before anything is queued."""
        if prompt_tokens < 1:
            raise InvalidRequest("the prompt is empty; send at least one token")
        if max_tokens < 1:
            raise InvalidRequest(f"max_tokens must be at least 1, got {max_tokens}", "max_tokens")
        if prompt_tokens + max_tokens > self.max_len:
            raise ContextLengthExceeded(prompt_tokens, max_tokens, self.max_len)
        if n > self.num_slots:
            raise InvalidRequest(f"n={n} needs {n} sequences at once but this server decodes at most "
                                 f"{self.num_slots}; lower n", "n")

    def check_request(self, request: Request) -> None:
        """`check`, and the request's own options against the model."""
        self.check(len(request.prompt_ids), request.max_tokens, request.n)
        if request.logit_bias and not all(0 <= t < self.vocab_size for t in request.logit_bias):
            raise HeptaError(f"logit_bias keys must be token ids in 0..{self.vocab_size - 1}")
        if request.logprobs is not None and not 0 <= request.logprobs <= MAX_TOP_LOGPROBS:
            raise HeptaError(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}, got {request.logprobs}")


class Observer:
    """Hooks for metrics; the server's Prometheus collector overrides them. Called on the engine thread."""

    def first_token(self, seconds: float) -> None: ...

    def inter_token(self, seconds: float) -> None: ...

    def tokens_generated(self, count: int) -> None: ...

    def step_done(self) -> None:
        """Every sequence of a forward has had its event (the engine process sends them together)."""


class _Sequence:
    """One choice of one request, living in one slot."""

    def __init__(self, request: Request, index: int, slot: int, tokenizer: TextTokenizer, vocab_size: int,
                 images: ImageVocab | None = None, audio: AudioVocab | None = None):
        self.request, self.index, self.slot = request, index, slot
        self.token_ids: list[int] = []
        self.text_ids: list[int] = []  # token_ids without image and audio spans: what the text deltas decode
        # ids so far of the image span being written (0: none open); a prompt may open one itself
        self.image_position = images.open_span_position(request.prompt_ids) if images is not None else 0
        self.in_audio = bool(audio.open_span(request.prompt_ids)) if audio is not None else False
        self.last_token = -1
        self.text = StreamingText(tokenizer, request.stop)
        seed = request.sampling.seed
        self.generator = torch.Generator().manual_seed(seed + index) if seed is not None else None
        self.constraint = request.constraint.new() if request.constraint is not None else None
        self.counts = torch.zeros(vocab_size, dtype=torch.int32) if request.sampling.has_penalties else None
        bias = request.logit_bias or {}
        self.bias_ids = torch.tensor(list(bias), dtype=torch.long) if bias else None
        self.bias_values = torch.tensor(list(bias.values())) if bias else None
        self.last_time: float | None = None
        self.finished = False
        self.cached = 0  # prompt tokens a kept prefix served, told with the first event

    def take_cached(self) -> int:
        cached, self.cached = self.cached, 0
        return cached


class Engine:
    def __init__(self, model: Transformer, tokenizer: TextTokenizer, config: EngineConfig = EngineConfig(),
                 observer: Observer | None = None, images: ImageVocab | None = None, audio: AudioVocab | None = None,
                 vision=None, threads: Callable[[float], int] | None = None):
        """`images`, `audio`: where image and audio spans live in the id space, for a model that writes them.
        `vision`: for a model that reads images and videos through a vision encoder (Qwen3-VL), what turns a
        prefill's media into the model's `VisualInput` (`visual_input(prompts, media, length)`). `threads`: torch's
        intra-op threads for a forward of so many FLOPs of matmuls, set before each (the engine process's policy,
        infer/core.py); None leaves torch's count alone."""
        self.model, self.tokenizer, self.config = model.eval(), tokenizer, config
        self.threads = threads
        self.token_flops = 2 * matmul_params(model.config)  # of the matmuls of a forward, per token
        # the model and its cache live on this device (a GPU, say); sampling, masks and penalties stay on the
        # CPU, where the logits of each step come back: its tokens are read there anyway
        self.device = model.embed.weight.device
        self.images, self.audio, self.vision = images, audio, vision
        self.observer = observer or Observer()
        cfg = model.config
        self.max_len = min(config.max_model_len or cfg.max_seq_len, cfg.max_seq_len)
        slot_bytes = model.new_slot_cache(1, self.max_len, device="meta").num_bytes()
        num_slots = config.max_num_seqs
        # a vision encoder's features and activations live during one prefill, whose prompt tokens (placeholders
        # included) max_prefill_tokens bounds: the budget sets that much aside before it holds slots
        self.vision_bytes = vision.prefill_bytes(config.max_prefill_tokens) if vision is not None else 0
        if config.kv_cache_bytes is not None:
            num_slots = min(num_slots, max(0, config.kv_cache_bytes - self.vision_bytes) // slot_bytes)
            if num_slots < 1:
                raise HeptaError(f"the KV cache budget of {config.kv_cache_bytes / 2**20:.1f} MiB (less "
                                 f"{self.vision_bytes / 2**20:.1f} MiB for the vision encoder) holds no sequence: "
                                 f"one of {self.max_len} tokens needs {slot_bytes / 2**20:.1f} MiB; raise the budget "
                                 "or lower the maximum model length")
        self.cache = model.new_slot_cache(num_slots, self.max_len)
        # one sequence decoding on a CPU multiplies each weight by one row, several sequences by a few rows: the
        # faster products for those, measured
        self.matvec = choose_matvec(model)
        self.vocab_size = cfg.vocab_size
        self.end_ids, self.banned_V = sampleable(tokenizer, cfg.vocab_size)
        if images is not None:
            # outside a span, text and <|image_start|>; inside, exactly what the span's grammar allows next
            self.banned_V[images.start_id] = 0.0
            self.span_banned_PV = torch.stack([
                torch.where(images.allowed_mask(position, cfg.vocab_size), 0.0, float("-inf"))
                for position in range(images.span_length)])
        if audio is not None:
            # outside a span, <|audio_start|> opens one; inside, audio codes or <|audio_end|>
            self.banned_V[audio.start_id] = 0.0
            self.audio_banned_V = torch.where(audio.inside_mask(cfg.vocab_size), 0.0, float("-inf"))
        self.limits = EngineLimits(self.max_len, self.cache.num_slots, self.vocab_size, frozenset(self.end_ids),
                                   cfg.dim)
        # softmax attention only: a chunk or a kept prefix continues a slot's cache, which a linear-attention
        # layer's state cannot do from an arbitrary point
        self._can_chunk = cfg.attention.kind == "gqa" and not cfg.attention.linear_layers
        self.prefix: PrefixCache | None = None
        prefix_bytes = config.prefix_cache_bytes
        if prefix_bytes is None:
            prefix_bytes = self.cache.num_bytes() // 4
        if self._can_chunk and prefix_bytes:
            self.prefix = PrefixCache(self.cache, prefix_bytes)

        self._waiting: deque[Request] = deque()
        self._running: list[_Sequence] = []  # index = slot
        # a long prompt being prefilled a chunk a step, in the slot after the running ones; nothing else is
        # admitted until it joins them
        self._chunking: _Sequence | None = None
        self._chunk_done = 0  # its prompt tokens prefilled so far
        self._admitting: deque[tuple[Request, int]] = deque()  # (request, choice) between queue and slot
        self._jobs: deque[tuple[Callable, Future]] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="hepta-engine", daemon=True)

    # --- public --------------------------------------------------------------------------

    @property
    def num_slots(self) -> int:
        return self.cache.num_slots

    @property
    def num_requests_running(self) -> int:
        chunking = [self._chunking] if self._chunking is not None else []
        return len({id(seq.request) for seq in list(self._running) + chunking})

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    @property
    def kv_usage(self) -> float:
        """Share of the KV cache's token capacity holding running sequences' tokens."""
        used = int(self.cache.lengths[:len(self._running)].sum())
        return used / (self.num_slots * self.max_len)

    def start(self) -> "Engine":
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def check(self, prompt_tokens: int, max_tokens: int, n: int = 1) -> None:
        """Raises the error a request of this shape would get, before anything is queued."""
        self.limits.check(prompt_tokens, max_tokens, n)

    def submit(self, request: Request) -> Request:
        """Queues `request`; every choice of an accepted request gets exactly one final event
        (finish_reason set), whether it ends, is cancelled, fails or the engine stops."""
        self.limits.check_request(request)
        if request.media and self.vision is None:
            raise InvalidRequest("this model reads no images or videos through a vision encoder; send text only")
        with self._wake:
            if self._stopping:  # the loop that would end it is gone: refuse rather than never answer
                raise EngineStopped("the engine has stopped; start a new one")
            if len(self._waiting) >= self.config.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests are already waiting; retry shortly")
            self._waiting.append(request)
            self._wake.notify()
        return request

    def run_exclusive(self, fn: Callable[[], object]) -> Future:
        """Runs `fn` on the engine thread between two steps (model work that is not generation)."""
        future: Future = Future()
        with self._wake:
            if self._stopping:
                raise EngineStopped("the engine has stopped; start a new one")
            self._jobs.append((fn, future))
            self._wake.notify()
        return future

    # --- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not (self._stopping or self._waiting or self._running or self._jobs or self._chunking):
                    self._wake.wait()
                if self._stopping:
                    break
                jobs = list(self._jobs)
                self._jobs.clear()
            for fn, future in jobs:
                self._run_job(fn, future)
            try:
                self._drop_cancelled()
                self._admit_and_prefill()
                self._release_finished()
                if self._chunking is not None and self.config.pack_prefill:
                    # the next piece of a long prompt, in the running sequences' step's forward
                    self._chunk_step(list(self._running))
                    self._release_finished()
                else:
                    if self._running:
                        self._decode_step()
                        self._release_finished()
                    if self._chunking is not None:  # after the others' step, in a forward of its own
                        self._chunk_step([])
                        self._release_finished()
            except Exception as e:  # a failing step must not leave clients waiting forever
                log.exception("an engine step failed; every open request ends with its error")
                self._fail_all(f"{type(e).__name__}: {e}")
        self._fail_all("the server is shutting down", reason="cancelled")
        with self._wake:
            jobs, self._jobs = list(self._jobs), deque()
        for _, future in jobs:  # queued model work that will never run is not left pending
            if future.set_running_or_notify_cancel():
                future.set_exception(EngineStopped("the engine stopped before this work ran"))

    @staticmethod
    def _run_job(fn: Callable, future: Future) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn())
        except Exception as e:
            future.set_exception(e)

    def _drop_cancelled(self) -> None:
        with self._wake:
            dropped = [r for r in self._waiting if r.cancelled.is_set()]
            if dropped:
                self._waiting = deque(r for r in self._waiting if not r.cancelled.is_set())
        for request in dropped:  # never admitted, but their callers still get each choice's final event
            for index in range(request.n):
                request.sink(Event(index, "", [], finish_reason="cancelled"))
        for seq in self._running:
            if seq.request.cancelled.is_set() and not seq.finished:
                self._finish(seq, "cancelled", [], None)
        if self._chunking is not None and self._chunking.request.cancelled.is_set():
            self._drop_chunking().sink(Event(0, "", [], finish_reason="cancelled"))
        self._release_finished()

    def _chunkable(self, request: Request) -> bool:
        """Whether `request` is prefilled a chunk a step: a long prompt of one choice, without media, arriving
        while other sequences decode (alone, chunks would only add steps)."""
        chunk = self.config.prefill_chunk
        return (chunk is not None and self._can_chunk and len(request.prompt_ids) > chunk and request.n == 1
                and not request.media and bool(self._running))

    def _admit_and_prefill(self) -> None:
        if self._chunking is not None:  # the long prompt joins the running sequences first
            return
        admitted: list[Request] = []
        with self._wake:
            free = self.num_slots - len(self._running)
            padded_tokens = 0
            if self._waiting and free >= 1 and self._chunkable(self._waiting[0]):
                request = self._waiting.popleft()
                self._chunking = _Sequence(request, 0, len(self._running), self.tokenizer, self.vocab_size,
                                           self.images, self.audio)
                self._chunk_done = self._load_prefix(self._chunking)  # a kept prefix is not prefilled again
                return  # its first chunk runs after the others' next decode step
            while self._waiting and self._waiting[0].n <= free:
                request = self._waiting[0]
                if admitted and self._chunkable(request):
                    break  # it goes alone, next time
                longest = max([len(r.prompt_ids) for r in admitted] + [len(request.prompt_ids)])
                padded_tokens = longest * (sum(r.n for r in admitted) + request.n)
                if admitted and padded_tokens > self.config.max_prefill_tokens:
                    break
                admitted.append(self._waiting.popleft())
                free -= request.n
        if not admitted:
            return
        # shortest prompts first, so prompts of similar length share a prefill and little of it is padding
        pairs = sorted(((r, i) for r in admitted for i in range(r.n)), key=lambda pair: len(pair[0].prompt_ids))
        # Choices left the queue but have no sequence yet: if building one fails, _fail_all still finds them.
        self._admitting = deque(pairs)
        new = []
        while self._admitting:
            request, index = self._admitting[0]
            seq = _Sequence(request, index, len(self._running), self.tokenizer, self.vocab_size, self.images, self.audio)
            self._admitting.popleft()
            self._running.append(seq)
            new.append(seq)
        # sequences whose prompt starts with a kept prefix continue it, their rests in one packed forward; the
        # others are prefilled in padded groups, and their prompts kept for later ones
        reused = {id(seq): self._load_prefix(seq) for seq in new}
        for group in _prefill_groups([seq for seq in new if not reused[id(seq)]]):
            self._prefill(group)
        hits = [(seq, reused[id(seq)]) for seq in new if reused[id(seq)]]
        if hits:
            self._prefill_rests(hits)

    def _load_prefix(self, seq: _Sequence) -> int:
        """Copies the longest kept prefix of `seq`'s prompt into its slot; returns its length (0: none)."""
        if self.prefix is None or seq.request.media:
            return 0
        keys = self.prefix.lookup(seq.request.prompt_ids)
        seq.cached = self.prefix.load(keys, seq.slot) if keys else 0
        return seq.cached

    def _keep_prefix(self, seq: _Sequence) -> None:
        """Keeps the blocks of what `seq`'s slot holds (its prompt, then what it wrote) for later prompts."""
        if self.prefix is not None and not seq.request.media:
            held = int(self.cache.lengths[seq.slot])
            self.prefix.store((seq.request.prompt_ids + seq.token_ids)[:held], seq.slot)

    def _prefill_rests(self, hits: list[tuple[_Sequence, int]]) -> None:
        """Prefills each (sequence, done) prompt after the `done` tokens its slot holds already, all of them in one
        packed forward (each its own part, no padding)."""
        self.cache.set_packed(0, [(seq.slot, len(seq.request.prompt_ids) - done) for seq, done in hits])
        last = torch.tensor([part.tokens.stop - 1 for part in self.cache.parts], device=self.device)
        tokens = [token for seq, done in hits for token in seq.request.prompt_ids[done:]]
        self._use_threads(len(tokens))
        with torch.no_grad():
            hidden_1ND = self.model.hidden_states(torch.tensor([tokens], device=self.device), cache=self.cache)
            logits_BV = self.model.output(hidden_1ND[0, last])
        for seq, _ in hits:
            self._keep_prefix(seq)
        self._sample_and_emit([seq for seq, _ in hits], logits_BV)

    def _prefill(self, seqs: list[_Sequence]) -> None:
        """One right-padded forward over the prompts of `seqs`, which sit in consecutive fresh slots."""
        ids_BT, lengths_B = pad_right([seq.request.prompt_ids for seq in seqs])
        start = seqs[0].slot
        self.cache.set_window(start, len(seqs), prompt_lengths=lengths_B)
        visual = None
        if self.vision is not None and any(seq.request.media for seq in seqs):
            # the vision encoder runs here, once per prefill: its activations last only this forward
            visual = self.vision.visual_input([seq.request.prompt_ids for seq in seqs],
                                              [seq.request.media or [] for seq in seqs], ids_BT.shape[1]
                                              ).to(self.device)
        self._use_threads(ids_BT.numel())
        with torch.no_grad():
            hidden_BTD = self.model.hidden_states(ids_BT.to(self.device), cache=self.cache, visual=visual)
            # the LM head only where the next token is read: each prompt's last real position
            last_B = (lengths_B - 1).to(self.device)
            logits_BV = self.model.output(hidden_BTD[torch.arange(len(seqs), device=self.device), last_B])
        for seq in seqs:
            self._keep_prefix(seq)
        self._sample_and_emit(seqs, logits_BV)

    def _chunk_step(self, running: list[_Sequence]) -> None:
        """The long prompt's next chunk (its slot's first tokens, or a continuation of them), in one packed forward
        with the next tokens of `running` (none: the chunk alone): the projections and experts run once over both,
        so the chunk adds its own arithmetic to the step and not a second forward's fixed cost; attention goes part
        by part (SlotCache.set_packed). After the last chunk, the prompt joins the running sequences."""
        seq, done = self._chunking, self._chunk_done
        ids = seq.request.prompt_ids
        size = min(self.config.prefill_chunk, len(ids) - done)
        self.cache.set_packed(len(running), [(seq.slot, size)])
        tokens = [s.last_token for s in running] + ids[done:done + size]
        self._use_threads(len(tokens))
        with torch.no_grad():
            hidden_1ND = self.model.hidden_states(torch.tensor([tokens], device=self.device), cache=self.cache)
            logits_BV = self.model.output(hidden_1ND[0, :len(running)]) if running else None
            logits_1V = self.model.output(hidden_1ND[:, -1]) if done + size == len(ids) else None
        self._chunk_done += size
        if running:
            self._sample_and_emit(running, logits_BV)
        if logits_1V is not None:
            self._join_chunked(logits_1V)

    def _join_chunked(self, logits_1V: torch.Tensor) -> None:
        """The long prompt is prefilled: it joins the running sequences with its first token."""
        seq = self._chunking
        self._chunking = None
        slot = len(self._running)  # running sequences may have ended meanwhile: it moves down to stay next to them
        if seq.slot != slot:
            self.cache.move(seq.slot, slot)
            self.cache.release(seq.slot)
            seq.slot = slot
        self._keep_prefix(seq)
        self._running.append(seq)
        self._sample_and_emit([seq], logits_1V)

    def _drop_chunking(self) -> Request:
        """Stops prefilling the long prompt (cancelled, or the engine failing) and frees its slot; its request
        still needs its final event."""
        seq, self._chunking = self._chunking, None
        self.cache.release(seq.slot)
        return seq.request

    def _use_threads(self, tokens: int) -> None:
        """Sets torch's intra-op threads for a forward of `tokens` tokens, where the engine has a policy."""
        if self.threads is not None and (count := self.threads(tokens * self.token_flops)) != torch.get_num_threads():
            torch.set_num_threads(count)

    def _decode_step(self) -> None:
        self._use_threads(len(self._running))
        ids_B1 = torch.tensor([[seq.last_token] for seq in self._running], device=self.device)
        self.cache.set_window(0, len(self._running))
        with torch.no_grad():
            logits_BV = self.model(ids_B1, cache=self.cache)[:, -1]
        self._sample_and_emit(self._running, logits_BV)

    def _sample_and_emit(self, seqs: list[_Sequence], logits_BV: torch.Tensor) -> None:
        raw_BV = logits_BV.float().cpu()
        logits_BV = raw_BV + self.banned_V
        if self.images is not None:
            in_span = [row for row, seq in enumerate(seqs) if seq.image_position]
            if in_span:
                positions = torch.tensor([seqs[row].image_position for row in in_span])
                logits_BV[in_span] = raw_BV[in_span] + self.span_banned_PV[positions]
        if self.audio is not None:
            in_audio = [row for row, seq in enumerate(seqs) if seq.in_audio]
            if in_audio:
                logits_BV[in_audio] = raw_BV[in_audio] + self.audio_banned_V
        for row, seq in enumerate(seqs):
            if seq.bias_ids is not None:
                logits_BV[row, seq.bias_ids] += seq.bias_values
        if any(seq.constraint is not None for seq in seqs):  # one grammar call for the whole batch
            allowed_BV = allowed_masks([seq.constraint for seq in seqs], self.vocab_size)
            logits_BV.masked_fill_(~allowed_BV, float("-inf"))
        penalised = [row for row, seq in enumerate(seqs) if seq.counts is not None]
        if penalised:
            rows = torch.tensor(penalised)
            params = [seqs[r].request.sampling for r in penalised]
            logits_BV[rows] = apply_penalties(logits_BV[rows], torch.stack([seqs[r].counts for r in penalised]),
                                              torch.tensor([p.presence_penalty for p in params]),
                                              torch.tensor([p.frequency_penalty for p in params]))
        next_B = sample_batch(logits_BV, [s.request.sampling for s in seqs], [s.generator for s in seqs])
        want = [s.request.logprobs for s in seqs if s.request.logprobs is not None]
        logprob_rows = None
        if want:
            logprob_rows = top_logprobs(raw_BV, next_B, max(want))
        now = time.perf_counter()
        self.observer.tokens_generated(len(seqs))
        for row, (seq, token) in enumerate(zip(seqs, next_B.tolist())):
            logprob = None
            if seq.request.logprobs is not None:
                chosen, top_values, top_ids = logprob_rows
                k = seq.request.logprobs
                logprob = TokenLogprob(token, float(chosen[row]),
                                       list(zip(top_ids[row, :k].tolist(), top_values[row, :k].tolist())))
            if seq.last_time is None:
                if seq.index == 0:
                    self.observer.first_token(now - seq.request.arrival)
            else:
                self.observer.inter_token(now - seq.last_time)
            seq.last_time = now
            self._advance(seq, token, logprob)
        self.observer.step_done()

    def _advance(self, seq: _Sequence, token: int, logprob: TokenLogprob | None) -> None:
        request = seq.request
        seq.last_token = token
        if token in self.end_ids:
            return self._finish(seq, "stop", [token], logprob)
        seq.token_ids.append(token)
        if seq.counts is not None:
            seq.counts[token] += 1
        if seq.constraint is not None:
            seq.constraint.accept(token)
        if self.images is not None and (seq.image_position or token == self.images.start_id):
            seq.image_position = self.images.next_position(seq.image_position)
        elif self.audio is not None and (seq.in_audio or token == self.audio.start_id):
            seq.in_audio = token != self.audio.end_id
        else:
            seq.text_ids.append(token)
        delta = seq.text.push(seq.text_ids)
        if seq.text.final_text is not None or (seq.constraint is not None and seq.constraint.is_finished):
            return self._finish(seq, "stop", [token], logprob, delta)
        if len(seq.token_ids) >= request.max_tokens:
            return self._finish(seq, "length", [token], logprob, delta)
        request.sink(Event(seq.index, delta, [token], [logprob] if logprob else None, cached_tokens=seq.take_cached()))

    def _finish(self, seq: _Sequence, reason: str, tokens: list[int], logprob: TokenLogprob | None,
                delta: str = "") -> None:
        tail = seq.text.finish(seq.text_ids)
        seq.request.sink(Event(seq.index, delta + tail, tokens, [logprob] if logprob else None, finish_reason=reason,
                               cached_tokens=seq.take_cached()))
        # only once the final event is out: if building or sending it raised, _fail_all still ends this choice
        seq.finished = True

    def _release_finished(self, keep: bool = True) -> None:
        """Frees finished sequences' slots, moving the last running sequence into each freed slot; with `keep`,
        what each held is kept as a prefix first (a conversation's next turn starts with it)."""
        slot = 0
        while slot < len(self._running):
            seq = self._running[slot]
            if not seq.finished:
                slot += 1
                continue
            if keep:
                self._keep_prefix(seq)
            last = len(self._running) - 1
            if slot != last:
                self.cache.move(last, slot)
                self._running[slot] = self._running[last]
                self._running[slot].slot = slot
            self._running.pop()
            self.cache.release(last)

    def _fail_all(self, message: str, reason: str = "error") -> None:
        """Ends every choice the engine holds (running, being admitted, waiting) with `message`."""
        ended = [(seq.request, seq.index) for seq in self._running if not seq.finished]
        for seq in self._running:
            seq.finished = True
        self._release_finished(keep=False)  # a failed step may have left a slot half written
        if self._chunking is not None:
            ended.append((self._drop_chunking(), 0))
        ended += list(self._admitting)
        self._admitting.clear()
        with self._wake:
            waiting, self._waiting = list(self._waiting), deque()
        ended += [(request, index) for request in waiting for index in range(request.n)]
        for request, index in ended:
            try:
                request.sink(Event(index, "", [], finish_reason=reason, error=message))
            except Exception:  # one broken sink must not keep the others from their final events
                log.exception("could not deliver the final event of request %s", request.id)


MAX_PADDING_SHARE = 0.25  # a prefill group grows while padding stays under this share of its tokens


def _prefill_groups(seqs: list[_Sequence]) -> list[list[_Sequence]]:
    """Consecutive runs of length-sorted sequences whose padded prefill wastes little.

    A padded batch costs (rows x longest prompt); one forward per group costs a step's fixed
    overhead. Grouping while padding stays under MAX_PADDING_SHARE balances the two. A group's
    slots are consecutive (one prefill writes one window of slots): a sequence that continues a
    kept prefix, left out of `seqs`, splits the run its slot sits in.
    """
    groups: list[list[_Sequence]] = []
    for seq in seqs:
        if groups and seq.slot == groups[-1][-1].slot + 1:
            group = groups[-1]
            real = sum(len(s.request.prompt_ids) for s in group) + len(seq.request.prompt_ids)
            padded = (len(group) + 1) * len(seq.request.prompt_ids)  # sorted: this one is the longest
            if padded - real <= MAX_PADDING_SHARE * padded:
                group.append(seq)
                continue
        groups.append([seq])
    return groups


def stream_events(engine: Engine, request: Request, collector: Collector,
                  timeout: float | None = None) -> Iterator[Event]:
    """Submits `request` and yields its events as they come, each folded into `collector` first, until
    every choice has finished (raises GenerationFailed for an error event)."""
    events: queue.SimpleQueue[Event] = queue.SimpleQueue()
    request.sink = events.put  # called on the engine's thread
    engine.submit(request)
    while not collector.done:
        event = events.get(timeout=timeout)
        collector.add(event.index, event)
        yield event


def generate(engine: Engine, request: Request, timeout: float | None = None) -> list[Choice]:
    """Submits `request` and blocks until every choice has finished (for scripts, tests, benchmarks)."""
    collector = Collector(request.n, engine.end_ids)
    for _ in stream_events(engine, request, collector, timeout):
        pass
    return collector.choices


def generate_many(engine: Engine, requests: list[Request], in_flight: int | None = None,
                  on_done: Callable[[int], None] | None = None) -> list[list[Choice]]:
    """Offline batch inference: runs every request and returns their choices in order; the engine
    batches whatever is in flight. At most `in_flight` run at a time, by default the engine's queue
    limit: requests not yet in a slot all wait in the queue, so it never refuses one. `on_done(i)`
    is called as request i finishes."""
    in_flight = in_flight or engine.config.max_queue
    done: queue.SimpleQueue[tuple[int, Event]] = queue.SimpleQueue()
    collectors = [Collector(r.n, engine.end_ids) for r in requests]

    def submit(i: int) -> None:
        requests[i].sink = lambda event, i=i: done.put((i, event))  # called on the engine's thread
        engine.submit(requests[i])

    next_up = min(in_flight, len(requests))
    for i in range(next_up):
        submit(i)
    finished = 0
    while finished < len(requests):
        i, event = done.get()
        collectors[i].add(event.index, event)
        if collectors[i].done:
            finished += 1
            if on_done is not None:
                on_done(i)
            if next_up < len(requests):
                submit(next_up)
                next_up += 1
    return [c.choices for c in collectors]
