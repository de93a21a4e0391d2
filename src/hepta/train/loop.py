"""The training loop of `hepta train`: data -> model -> AdamW steps -> checkpoints and records."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F

from hepta.checkpoint import CONFIG_FILE, INDEX_FILE, WEIGHTS_FILE, build_model, save_weights
from hepta.config import ModelConfig, get_preset
from hepta.devices import resolve_device
from hepta.errors import HeptaError
from hepta.fileio import atomic_write_text
from hepta.modality.chat import video_vocab
from hepta.modality.code_embedding import init_code_rows
from hepta.modality.video_reading import VideoReading
from hepta.modality.video_span import StampForm
from hepta.model import Transformer
from hepta.model.packed_rows import PackedRows
from hepta.tokenizer import NUM_SPECIAL_TOKENS, Tokenizer
from hepta.train.conversations import (IGNORE, conversation_loss, count_answers, encode_examples,
                                       is_conversation_file, mix, sample_chat_batch)
from hepta.train.data import Documents, batch_generator, sample_batch, stdlib_documents, tokenize, user_documents
from hepta.train.image_setup import ImageData, prepare_image_data
from hepta.train.speech_setup import SpeechData, prepare_speech_data
from hepta.train.video_setup import VideoData
from hepta.train.modality_load import ModalityLoad
from hepta.train.recipes import image_recipe
from hepta.train.repeat_task import FIRST_MERGED_ID, repeat_batch
from hepta.train.optim import build_optimizer, lr_at
from hepta.train.report import MetricsLog, plot_run, read_metrics
from hepta.train.parallel import parallelize
from hepta.train.parallel.balance import sync_expert_load, use_global_load_in_aux_loss
from hepta.train.parallel.checkpointing import apply_activation_checkpointing
from hepta.train.parallel.export import gather_full_model
from hepta.train.parallel.grad_norm import clip_grad_norm
from hepta.train.parallel.runtime import start_distributed
from hepta.train.state import checkpoint_step, latest_checkpoint, load_train_state, save_train_state

ARGS_FILE = "train_args.json"
TOKENIZER_SAMPLE_BYTES = 8_000_000  # BPE merges stabilise well before the whole corpus


@dataclass(frozen=True)
class TrainArgs:
    out: str
    preset: str = "tiny"
    overrides: dict = field(default_factory=dict)  # ModelConfig fields to change from the preset, by --set name
    data: str | None = None  # None: the embedded standard-library corpus
    max_corpus_mb: float | None = None
    steps: int = 300
    batch_size: int = 8
    seq_len: int = 256
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 20
    weight_decay: float = 0.1
    clip: float = 1.0
    bf16: bool = False
    seed: int = 0
    save_every: int = 100
    eval_every: int = 100
    eval_batches: int = 8
    # How to spread the run over torchrun's processes; a resumed run may change them.
    ep: int | None = None  # expert-parallel degree; None: the largest dividing dp_shard and num_experts
    dp_shard: int | None = None  # FSDP shard group size; None: all processes
    activation_checkpointing: bool = False
    device: str = "auto"  # one process's device (hepta.devices); under torchrun each rank takes its LOCAL_RANK's GPU
    # Conversations (text and images) beside the text corpus; presets with image codes only.
    chat_batch_size: int = 32  # conversations per step, on top of the text batch
    # the step's conversations in this many groups of like lengths: each group's rows padded to its longest for
    # attention (packed) or for the whole forward (padded)
    chat_length_groups: int = 3
    # a step's conversations (and its clips) run as one forward over their real tokens, attention within each
    # row (model/packed_rows.py); False: each length group a padded batch of its own (ablation)
    packed_conversations: bool = True
    text_only: bool = False  # the same preset and steps without the conversations: the text baseline
    # rows of random text tokens written twice, beside the text batch (train/repeat_task.py): they
    # teach the look-up answers from a long prompt rest on, long before text alone would
    repeat_rows: int = 0
    repeat_symbols: int | None = None  # the repeats use this many merged text ids; None: every text id
    image_tokenizer: str | None = None  # a trained image tokenizer folder to use; None: train one in the run
    image_tokenizer_steps: int | None = None  # None: the recipe's
    augment: bool = True  # the embedded digits: recognition also sees moved and turned views (ablation: False)
    structured_code_init: bool = True  # code embeddings start near their FSQ neighbours (ablation: False)
    audio_tokenizer: str | None = None  # a trained audio tokenizer folder to use; None: train one in the run
    audio_tokenizer_steps: int | None = None  # None: the recipe's
    speech_utterances: int | None = None  # recognition utterances (synthesis: half as many); None: the recipe's
    speed_perturbation: bool = False  # recognition utterances speed-perturbed within the recipe's range
    # the text tokenizer writes every number a digit a token (tokenizer.train_bpe); False: every two-digit number
    # one token (`hepta train --digit-tokens`)
    digit_tokens: bool = False
    video_timestamps: bool = True  # video frames carry their time as text (ablation: False)
    # the recipe's reading of video: the question before the video and a caption the model writes after each
    # frame, the one that answers marked (VideoRecipe.question_first, captions and mark); ablation: False
    video_captions: bool = True
    video_loss_weight: float | None = None  # how many times the video questions' loss counts; None: the recipe's
    video_mark_weight: float | None = None  # how many times each caption's mark decision counts; None: the recipe's
    video_mark_weight_moves: bool = False  # the mark weight takes its share from the caption's other tokens
    # how video frames' timestamps are written (a StampForm's value; None: the recipe's VideoRecipe.stamps). A resumed
    # run keeps the form it started with (its video_reading.json).
    video_stamps: str | None = None
    # the switches of earlier versions, each the same as one form: False is "text", and True "time" or "tens"
    video_stamp_digits: bool = True
    video_time_tokens: bool = False
    video_tens_tokens: bool = False
    video_long_finish: float | None = None  # the share of the run that trains on long clips only; None: the recipe's
    video_shifted_clocks: float | None = None  # the share of clips whose clock starts after 0:00; None: the recipe's
    # what a marked time holds before its last digit (VideoRecipe.mark_units_anchor); None: the recipe's
    video_mark_units_anchor: str | None = None
    # video training clips show their digits in the moved and turned views recognition learns from (the recipe's
    # VideoRecipe.frame_views); False: the training scans only (ablation)
    video_frame_views: bool = True

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "seq_len", "grad_accum", "save_every", "eval_every", "eval_batches",
                    "chat_batch_size", "chat_length_groups", "image_tokenizer_steps", "audio_tokenizer_steps",
                    "speech_utterances")
        for name in positive + ("ep", "dp_shard"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise HeptaError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise HeptaError(f"--lr must be positive, got {self.lr}")
        if self.warmup < 0:
            raise HeptaError(f"--warmup must be 0 or more, got {self.warmup}")
        if self.clip <= 0:
            raise HeptaError(f"--clip must be positive, got {self.clip}")
        if self.repeat_symbols is not None and self.repeat_symbols < 2:
            raise HeptaError(f"--repeat-symbols must be at least 2, got {self.repeat_symbols}")
        if self.repeat_rows < 0:
            raise HeptaError(f"--repeat-rows must be 0 or more, got {self.repeat_rows}")
        if self.weight_decay < 0:
            raise HeptaError(f"--weight-decay must be 0 or more, got {self.weight_decay}")
        if self.video_loss_weight is not None and self.video_loss_weight <= 0:
            raise HeptaError(f"--video-loss-weight must be positive, got {self.video_loss_weight}")
        if self.video_mark_weight is not None and self.video_mark_weight <= 0:
            raise HeptaError(f"--video-mark-weight must be positive, got {self.video_mark_weight}")
        if self.video_long_finish is not None and not 0 <= self.video_long_finish <= 1:
            raise HeptaError(f"--video-long-finish is a share of the run, from 0 to 1, got {self.video_long_finish}")
        if self.video_shifted_clocks is not None and not 0 <= self.video_shifted_clocks <= 1:
            raise HeptaError(f"--video-shifted-clocks is a share of the clips, from 0 to 1, got "
                             f"{self.video_shifted_clocks}")
        if self.video_mark_units_anchor is not None and not re.fullmatch(r"[^\d:\s]*", self.video_mark_units_anchor):
            raise HeptaError(f"--video-mark-units-anchor takes text without digits, ':' or spaces, such as ',', got "
                             f"{self.video_mark_units_anchor!r}")
        forms = [form.value for form in StampForm]
        if self.video_stamps is not None and self.video_stamps not in forms:
            raise HeptaError(f"--video-stamps is one of {', '.join(forms)}, got {self.video_stamps!r}")
        switched = not self.video_stamp_digits or self.video_time_tokens or self.video_tens_tokens
        if self.video_stamps is not None and switched:
            raise HeptaError("--video-stamps names the timestamps' form alone; drop --no-video-stamp-digits, "
                             "--video-time-tokens and --video-tens-tokens")
        if self.max_corpus_mb is not None and self.max_corpus_mb <= 0:
            raise HeptaError(f"--max-corpus-mb must be positive, got {self.max_corpus_mb}")

    def stamp_form(self, recipe_form: StampForm) -> StampForm:
        """The form video timestamps are written in: the one named, else the one a switch names, else the recipe's."""
        if self.video_stamps is not None:
            return StampForm(self.video_stamps)
        if self.video_tens_tokens or self.video_time_tokens:
            return StampForm.of_flags(time_tokens=self.video_time_tokens, tens_tokens=self.video_tens_tokens)
        return recipe_form if self.video_stamp_digits else StampForm.TEXT

    def model_config(self) -> ModelConfig:
        cfg = get_preset(self.preset).with_changes(self.overrides)
        if self.data and is_conversation_file(self.data) and image_recipe(self.preset) is None:
            raise HeptaError(f"--data {self.data} holds conversations, which a preset with image codes trains on; "
                             "pass --preset omni-tiny")
        if self.seq_len > cfg.max_seq_len:
            raise HeptaError(f"--seq-len {self.seq_len} exceeds the model's context of {cfg.max_seq_len} tokens; "
                             "lower --seq-len or raise max_seq_len")
        return cfg


@dataclass
class TrainResult:
    out: Path
    steps: int
    val_loss_before: float
    val_loss_after: float
    seconds: float


def save_args(run_dir: Path, args: TrainArgs) -> None:
    atomic_write_text(run_dir / ARGS_FILE, json.dumps(dataclasses.asdict(args), indent=2) + "\n")


def load_args(run_dir: Path) -> TrainArgs:
    path = run_dir / ARGS_FILE
    if not path.is_file():
        raise HeptaError(f"{path} is missing, so the run cannot be resumed; start a new run in another --out folder")
    return TrainArgs(**json.loads(path.read_text()))


class Trainer:
    """One training run; under torchrun every process builds one, and they train together.

    Rank 0 writes every file but the sharded training state, logs and shows progress.
    """

    def __init__(self, args: TrainArgs, resume: bool = False, log: Callable[[str], None] = print):
        self.args = args
        self.run_dir = Path(args.out)
        self.checkpoint = latest_checkpoint(self.run_dir) if resume else None
        if resume and self.checkpoint is None:
            raise HeptaError(f"{self.run_dir} holds no complete checkpoint to resume; drop --resume to start a new run")
        if not resume:
            if latest_checkpoint(self.run_dir) is not None:
                raise HeptaError(f"{self.run_dir} already holds a training run; pass --resume to continue it "
                                 "or choose another --out folder")
            earlier = [n for n in (WEIGHTS_FILE, INDEX_FILE, CONFIG_FILE, ARGS_FILE) if (self.run_dir / n).exists()]
            if earlier:
                raise HeptaError(f"{self.run_dir} already holds a model or an unfinished run ({earlier[0]}); "
                                 "choose another --out folder or remove it")
        if self.checkpoint is not None and args.steps < checkpoint_step(self.checkpoint):
            raise HeptaError(f"--steps {args.steps} is below the checkpoint's step {self.checkpoint.name}; "
                             "pass a larger --steps or none")
        self.cfg = args.model_config()
        self.dist = start_distributed(self.cfg.moe.num_experts if self.cfg.num_moe_layers else 0,
                                      dp_shard=args.dp_shard, ep=args.ep)
        self.is_main = self.dist is None or self.dist.is_main
        self.log = log if self.is_main else (lambda _msg: None)
        try:
            self._setup(resume)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Leave the process group this run started (a no-op for one process)."""
        if self.dist is not None:
            self.dist.close()

    def _setup(self, resume: bool) -> None:
        args = self.args
        self.dp_rank, self.dp_size = (0, 1) if self.dist is None else (self.dist.rank, self.dist.world_size)
        for flag, size in (("--batch-size", args.batch_size), ("--chat-batch-size", args.chat_batch_size)):
            if size % self.dp_size:
                raise HeptaError(f"{flag} {size} does not split evenly over {self.dp_size} processes; "
                                 f"pass a multiple of {self.dp_size}")
        self._barrier()  # every rank has checked the folder before rank 0 writes into it

        conversation_file = args.data if args.data and is_conversation_file(args.data) else None
        docs = (user_documents(args.data) if args.data and not conversation_file
                else stdlib_documents(int(args.max_corpus_mb * 1e6) if args.max_corpus_mb else None))
        recipe = image_recipe(args.preset)
        self.images: ImageData | None = None
        if recipe is not None:
            self.images = prepare_image_data(recipe, self.run_dir, conversation_file, args, self.is_main,
                                             self._barrier, resume=self.checkpoint is not None, log=self.log)
        self.speech: SpeechData | None = None
        if recipe is not None and recipe.speech is not None:
            self.speech = prepare_speech_data(recipe.speech, self.run_dir, args, self.is_main, self._barrier,
                                              resume=self.checkpoint is not None, log=self.log)
        self.tokenizer = self._tokenizer(docs)
        # config.json records the code blocks the run's vocabulary really holds
        layout = self.tokenizer.layout
        self.cfg = self.cfg.replace(codes={"image": layout.num_image_codes, "audio": layout.num_audio_codes})
        self.stream = tokenize(docs, self.tokenizer)
        self.log(f"corpus: {docs.source}: {self.stream.train.numel():,} train / {self.stream.val.numel():,} "
                 f"validation tokens" + (", every number a digit a token" if self.tokenizer.digit_tokens else ""))
        self.chat = self.codec = self.audio_codec = None
        if self.images is not None and not args.text_only:
            self.codec = self.images.codec(self.tokenizer)
            conversations, sources = self.images.conversations(self.tokenizer), [self.images.source]
            if self.speech is not None:
                self.audio_codec = self.speech.codec(self.tokenizer)
                conversations = mix(conversations, self.speech.conversations(self.tokenizer), self.speech.share)
                sources.append(self.speech.source)
            self.chat = encode_examples(conversations, self.tokenizer, self.codec, args.seq_len,
                                        self.audio_codec.vocab if self.audio_codec else None)
            self.log(f"conversations: {'; '.join(sources)}: {len(self.chat):,} examples, "
                     f"{int((self.chat.targets != IGNORE).sum()):,} answer tokens")
        self.video: VideoData | None = None
        if self.codec is not None and recipe.video is not None and conversation_file is None:
            video_recipe = recipe.video
            if not args.video_captions:
                video_recipe = dataclasses.replace(video_recipe, question_first=False, captions=False, mark=False)
            if args.video_loss_weight is not None:
                video_recipe = dataclasses.replace(video_recipe, loss_weight=args.video_loss_weight)
            if args.video_mark_weight is not None:
                video_recipe = dataclasses.replace(video_recipe, mark_weight=args.video_mark_weight)
            if args.video_mark_weight_moves:
                video_recipe = dataclasses.replace(video_recipe, mark_weight_moves=True)
            if args.video_long_finish is not None:
                video_recipe = dataclasses.replace(video_recipe, long_finish=args.video_long_finish)
            if args.video_shifted_clocks is not None:
                video_recipe = dataclasses.replace(video_recipe, shifted_share=args.video_shifted_clocks)
            if args.video_mark_units_anchor is not None:
                video_recipe = dataclasses.replace(video_recipe, mark_units_anchor=args.video_mark_units_anchor)
            if not args.video_frame_views:
                video_recipe = dataclasses.replace(video_recipe, frame_views=False)
            stamps = args.stamp_form(video_recipe.stamps)
            if self.checkpoint is not None:  # the frames are read as they were when the run started
                stamps = VideoReading.load(self.run_dir).stamps
            self.video = VideoData.build(video_recipe, self.codec, self.tokenizer, self.cfg.max_seq_len,
                                         with_time=args.video_timestamps, stamps=stamps)
            self.log(self.video.source)

        self.device = resolve_device(args.device) if self.dist is None else self.dist.device
        if args.bf16 and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise HeptaError("--bf16 needs a GPU with bf16 arithmetic (NVIDIA Ampere or newer); drop --bf16")
        self.model: Transformer = build_model(self.cfg, seed=args.seed).to(self.device)
        if self.codec is not None and args.structured_code_init:
            self._init_code_rows()
        self.model.train()
        if self.dist is not None:
            layout = self.dist.layout
            self.log(f"parallel: {layout.describe()}")
            parallelize(self.model, self.dist.mesh, ep=layout.ep, activation_checkpointing=args.activation_checkpointing,
                        mixed_precision=args.bf16)
            use_global_load_in_aux_loss(self.model, self.dist.dp_group)
        elif args.activation_checkpointing:
            apply_activation_checkpointing(self.model)
        self.optimizer = build_optimizer(self.model, args.lr, args.weight_decay)
        self.step = 0
        if self.checkpoint is not None:
            self.step = load_train_state(self.checkpoint, self.model, self.optimizer)
            self.log(f"resumed from {self.checkpoint} at step {self.step}")
            if self.is_main:
                save_args(self.run_dir, args)  # --steps may have grown; a later plain --resume keeps it
        elif self.is_main:
            save_args(self.run_dir, args)
            self.cfg.save(self.run_dir / CONFIG_FILE)
            if self.video is not None:  # how the model must be prompted with video once trained
                VideoReading(self.video.recipe.question_first, self.video.captions,
                             self.video.stamps).save(self.run_dir)
        self.metrics = (MetricsLog(self.run_dir, resume_step=self.step if self.checkpoint else None)
                        if self.is_main else None)
        self._barrier()  # the metrics file is in its final state before any rank reads it

    def _init_code_rows(self) -> None:
        blocks = [(self.codec.vocab.code_start, self.codec.tokenizer.quantizer)]
        if self.audio_codec is not None:
            blocks.append((self.audio_codec.vocab.code_start, self.audio_codec.tokenizer.quantizer))
        for n, (code_start, quantizer) in enumerate(blocks):
            seed = self.args.seed + 2 * n
            init_code_rows(self.model.embed.weight, code_start, quantizer, seed=seed)
            if self.model.output.weight is not self.model.embed.weight:
                init_code_rows(self.model.output.weight, code_start, quantizer, seed=seed + 1)

    def _modality_masks(self) -> dict:
        masks = {}
        if self.codec is not None:
            masks["image"] = self.codec.vocab.image_mask
        if self.audio_codec is not None:
            masks["audio"] = self.audio_codec.vocab.audio_mask
        if self.video is not None:
            video = video_vocab(self.tokenizer, self.codec.vocab.grid)
            # a frame's codes are image ids, but they are video tokens
            masks["image"] = lambda ids: self.codec.vocab.image_mask(ids) & ~video.video_mask(ids)
            masks["video"] = video.video_mask
        return masks

    def _barrier(self) -> None:
        if self.dist is not None:
            self.dist.barrier()

    def _write(self, row: dict) -> None:
        if self.metrics is not None:
            self.metrics.write(row)

    def _mean_over_ranks(self, *values: float) -> list[float]:
        if self.dist is None:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t, group=self.dist.dp_group)
        return (t / self.dp_size).tolist()

    def _tokenizer(self, docs: Documents) -> Tokenizer:
        if self.checkpoint is not None:  # a resumed run keeps the ids it was trained with
            tokenizer = Tokenizer.load(self.run_dir)
        elif not self.is_main:  # rank 0 trains it (below) and writes it; the others read it
            self._barrier()
            tokenizer = Tokenizer.load(self.run_dir)
        else:
            sample, size = [], 0
            for text in docs.train:
                sample.append(text)
                size += len(text)
                if size >= TOKENIZER_SAMPLE_BYTES:
                    break
            # the image and audio code blocks, when there are any, take the end of the model's vocabulary
            num_image_codes = self.images.num_codes if self.images is not None else 0
            num_audio_codes = self.speech.num_codes if self.speech is not None else 0
            num_codes = num_image_codes + num_audio_codes
            text_vocab_size = self.cfg.vocab_size - NUM_SPECIAL_TOKENS - num_codes
            if text_vocab_size < 256:
                raise HeptaError(f"vocab_size {self.cfg.vocab_size} leaves {text_vocab_size} text ids beside "
                                 f"{NUM_SPECIAL_TOKENS} special ids and {num_codes} image and audio codes; byte-level BPE needs "
                                 "at least 256, raise vocab_size")
            tokenizer = Tokenizer.train(sample, text_vocab_size=text_vocab_size, digit_tokens=self.args.digit_tokens)
            if self.images is not None:
                tokenizer = tokenizer.with_image_codes(num_image_codes)
            if self.speech is not None:
                tokenizer = tokenizer.with_audio_codes(num_audio_codes)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            tokenizer.save(self.run_dir)
            self._barrier()
        if tokenizer.vocab_size > self.cfg.vocab_size:
            raise HeptaError(f"the tokenizer has {tokenizer.vocab_size} ids but the model only {self.cfg.vocab_size}; "
                             "raise vocab_size")
        return tokenizer

    # --- evaluation ----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, model: Transformer | None = None) -> float:
        args, model = self.args, (model if model is not None else self.model)
        model.eval()
        losses = []
        for i in range(args.eval_batches):
            x, y = self._batch(self.stream.val, batch_generator(args.seed, -1, i))
            with self._autocast():
                logits = model(x)
            losses.append(F.cross_entropy(logits.float().flatten(0, 1), y.flatten()).item())
        for moe in model.moe_layers():
            moe.load_since_update.zero_()  # evaluation traffic must not steer the balancing bias
        model.train()
        return self._mean_over_ranks(sum(losses) / len(losses))[0]

    def _batch(self, stream: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of the global batch that `generator` draws."""
        x, y = sample_batch(stream, self.args.batch_size, self.args.seq_len, generator, shard=(self.dp_rank, self.dp_size))
        return x.to(self.device), y.to(self.device)

    def _conversation_batches(self, micro: int):
        """("chat" or "video", answers, [(inputs, targets, rows), ...]) of this micro-step, for the sources the run
        has: the conversations drawn in groups of like lengths, the video questions in one batch; each source packed
        into one forward with no padding (model/packed_rows.py: `rows`), or without `packed_conversations` each
        group a padded batch of its own (rows None). `answers` counts the draw's answers."""
        args, shard = self.args, (self.dp_rank, self.dp_size)
        if self.chat is not None:
            generator = batch_generator(args.seed, self.step, args.grad_accum + micro)
            batches = sample_chat_batch(self.chat, args.chat_batch_size, generator, shard=shard,
                                        length_groups=args.chat_length_groups)
            yield "chat", *self._forwards(batches)
        if self.video is not None:  # clips as long as a step's other rows together
            x, y = self.video.batch(batch_generator(args.seed, self.step, 2 * args.grad_accum + micro), shard=shard,
                                    progress=self.step / args.steps)
            yield "video", *self._forwards([(x, y)])

    def _forwards(self, batches: list[tuple[torch.Tensor, torch.Tensor]]):
        """The draw's answer count and its forwards on the device: the batches packed into one, or each as it is."""
        answers = sum(count_answers(y) for _, y in batches)
        if self.args.packed_conversations:
            x, y, rows = PackedRows.pack(batches, self.tokenizer.special_ids["<|pad|>"])
            return answers, [(x.to(self.device), y.to(self.device), rows.to(self.device))]
        return answers, [(x.to(self.device), y.to(self.device), None) for x, y in batches]

    def _repeat_batch(self, micro: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's rows of random text tokens written twice, for this micro-step (repeats up to
        half the text batch's length)."""
        rows, rank, half = self.args.repeat_rows, self.dp_rank, self.args.seq_len // 2
        text, count = self.tokenizer.layout.text_vocab_size, self.args.repeat_symbols
        symbols = (0, text) if count is None else (FIRST_MERGED_ID, min(text, FIRST_MERGED_ID + count))
        x, y = repeat_batch(symbols,
                            batch_generator(self.args.seed, self.step, 3 * self.args.grad_accum + micro),
                            rows=rows * self.dp_size, lengths=(min(8, half), half))
        return x[rank * rows:(rank + 1) * rows].to(self.device), y[rank * rows:(rank + 1) * rows].to(self.device)

    def _autocast(self):
        # Sharded runs get bf16 from FSDP's mixed-precision policy instead.
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.args.bf16 and self.dist is None)

    def evaluate_initial(self) -> float:
        """Validation loss of the untrained model (re-created from the seed when resuming)."""
        loss = self.evaluate(None if self.step == 0 else build_model(self.cfg, seed=self.args.seed).to(self.device))
        self._write({"kind": "eval", "step": 0, "val_loss": loss})
        return loss

    # --- one optimisation step -----------------------------------------------------------

    def train_step(self) -> dict:
        args, model = self.args, self.model
        lr = lr_at(self.step, args.lr, args.warmup, args.steps, args.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ce_sum = router_sum = repeat_sum = 0.0
        conversation_sums = {"chat": 0.0, "video": 0.0}
        modality_load = ModalityLoad(self._modality_masks())
        for micro in range(args.grad_accum):
            x, y = self._batch(self.stream.train, batch_generator(args.seed, self.step, micro))
            with self._autocast():
                logits = model(x)
            # cross-entropy in fp32: bf16 log-softmax over a large vocabulary loses the small terms
            ce = F.cross_entropy(logits.float().flatten(0, 1), y.flatten())
            router = model.router_loss()
            modality_load.add(model, x)
            loss = ce + router
            if args.repeat_rows:
                repeat_x, repeat_y = self._repeat_batch(micro)
                with self._autocast():
                    repeat_logits = model(repeat_x, logits_at_BT=repeat_y != IGNORE)
                repeat_ce, repeat_router = conversation_loss(repeat_logits, repeat_y), model.router_loss()
                loss = loss + repeat_ce + repeat_router
                router = router + repeat_router
                repeat_sum += repeat_ce.item()
            # the same text batch as a text-only run, plus the conversations and the video questions
            for kind, answers, forwards in self._conversation_batches(micro):
                # the forwards of one draw weigh as one batch: the mean over all its answers and rows
                conv_ce, conv_loss, router_losses = 0.0, 0.0, []
                for conv_x, conv_y, rows in forwards:
                    with self._autocast():
                        conv_logits = model(conv_x, logits_at_BT=conv_y != IGNORE, rows=rows)  # answers only
                    ce_part = conversation_loss(conv_logits, conv_y, num_answers=answers)
                    weights = self.video.decision_weights(conv_y) if kind == "video" else None
                    # the loss trained on weighs the mark decisions; the one logged does not, as runs before them
                    conv_ce = conv_ce + ce_part
                    conv_loss = conv_loss + (ce_part if weights is None else
                                             conversation_loss(conv_logits, conv_y, num_answers=answers,
                                                               weights_BT=weights,
                                                               weights_move=self.video.recipe.mark_weight_moves))
                    router_losses.append(model.router_losses())
                    modality_load.add(model, conv_x, pad_id=self.tokenizer.special_ids["<|pad|>"])
                conv_router = model.pooled_router_loss(router_losses)
                weight = self.video.recipe.loss_weight if kind == "video" else 1.0
                loss = loss + weight * conv_loss + conv_router
                router = router + conv_router
                conversation_sums[kind] += conv_ce.item()
            (loss / args.grad_accum).backward()
            ce_sum += ce.item()
            router_sum += router.item()
        grad_norm = clip_grad_norm(list(model.parameters()), args.clip, None if self.dist is None else self.dist.dp_group)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        # every rank applies the bias update of the global batch's load, so all route alike
        load = sync_expert_load(model, None if self.dist is None else self.dist.dp_group)
        model.update_expert_bias()
        self.step += 1
        ce_mean, router_mean, repeat_mean, chat_mean, video_mean = self._mean_over_ranks(
            *(total / args.grad_accum for total in (ce_sum, router_sum, repeat_sum, *conversation_sums.values())))
        row = {"kind": "train", "step": self.step, "loss": ce_mean, "router_loss": router_mean, "lr": lr,
               "grad_norm": grad_norm}
        if args.repeat_rows:
            row["repeat_loss"] = repeat_mean
        if self.chat is not None:
            row["chat_loss"] = chat_mean
        if self.video is not None:
            row["video_loss"] = video_mean
        if modality_load.has_other_modalities:
            row["expert_load_by_modality"] = modality_load.shares(self.dist.dp_group if self.dist else None)
        if load.numel():
            row["expert_load"] = load.tolist()
            row["load_max_over_mean"] = (load.max(dim=1).values / load.float().mean(dim=1)).mean().item()
        return row

    def save(self) -> None:
        # The training state is the commit point: the weights go first, so a crash in between
        # leaves weights at least as new as `latest`, and the resumed run rewrites them.
        self.save_model_weights()
        save_train_state(self.run_dir, self.model, self.optimizer, self.step)

    def save_model_weights(self) -> None:
        """The plain model folder's weights; a sharded model is gathered on rank 0, which writes them."""
        model = self.model if self.dist is None else gather_full_model(self.model)
        if model is not None:
            save_weights(model, self.run_dir)
        self._barrier()

    # --- the run -------------------------------------------------------------------------

    def run(self, quiet: bool = False) -> TrainResult:
        try:
            return self._run(quiet)
        finally:
            self.close()

    def _run(self, quiet: bool) -> TrainResult:
        from hepta.progress import TrainProgress

        args = self.args
        started = time.perf_counter()
        # a fresh run has no metrics yet; a resumed one reuses the evaluation it made before step 1
        first_eval = None if self.checkpoint is None else next(
            (r for r in read_metrics(self.run_dir) if r["kind"] == "eval" and r["step"] == 0), None)
        if first_eval is None:
            val_before = self.evaluate_initial()
        else:
            val_before = first_eval["val_loss"]
        val_after = val_before
        tokens_per_step = args.batch_size * args.seq_len * args.grad_accum
        with TrainProgress(total=args.steps, start=self.step, quiet=quiet or not self.is_main) as progress:
            while self.step < args.steps:
                t0 = time.perf_counter()
                row = self.train_step()
                row["tokens_per_s"] = tokens_per_step / (time.perf_counter() - t0)
                self._write(row)
                progress.update(self.step, row)
                if self.step % args.eval_every == 0 or self.step == args.steps:
                    val_after = self.evaluate()
                    self._write({"kind": "eval", "step": self.step, "val_loss": val_after})
                if self.step % args.save_every == 0 or self.step == args.steps:
                    self.save()
        if self.checkpoint is not None and self.step == checkpoint_step(self.checkpoint):
            self.save_model_weights()  # resumed a finished run: make sure the weights match it
        evals = [r for r in read_metrics(self.run_dir) if r["kind"] == "eval"]
        val_after = evals[-1]["val_loss"] if evals else val_after
        if self.is_main:
            plot_run(self.run_dir)
        return TrainResult(self.run_dir, self.step, val_before, val_after, time.perf_counter() - started)
