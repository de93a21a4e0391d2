"""Conversation data: OpenAI-shaped chat JSONL (text and image parts) and the embedded digits set,
encoded once into id rows with the answer tokens marked, and drawn as padded batches.

A JSONL line is `{"messages": [{"role": "user", "content": [{"type": "text", "text": ...},
{"type": "image_url", "image_url": {"url": "path/or/data-URL"}}]}, {"role": "assistant", ...}]}`;
`content` may also be a plain string. Relative paths are read from the JSONL file's folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hepta.errors import HeptaError
from hepta.modality import digits
from hepta.modality.audio_span import AudioVocab
from hepta.modality.chat import ImageCodes, Turn, encode_chat
from hepta.modality.codec import ImageCodec
from hepta.modality.image_io import ImageInputError, decode_image, read_data_url, read_local_image
from hepta.tokenizer import CHAT_ROLES, Tokenizer

IGNORE = -100  # target id the loss skips


@dataclass(frozen=True)
class PixelPart:
    """An image part before tokenization: pixels [P, S, S] in [0, 1]."""

    pixels: np.ndarray


def is_conversation_file(path: str | Path) -> bool:
    """Whether `path` is a JSONL file whose first record holds `messages`."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".jsonl":
        return False
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    return isinstance(json.loads(line), dict) and "messages" in json.loads(line)
                except json.JSONDecodeError:
                    return False
    return False


def read_conversations(path: Path, image_size: int, channels: int) -> list[list[tuple[str, list]]]:
    """Each line's turns as (role, parts), image parts decoded to pixels at the tokenizer's size."""
    conversations = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise HeptaError(f"{where} is not valid JSON ({e.msg}); fix the line or remove it") from e
            messages = record.get("messages") if isinstance(record, dict) else None
            if not isinstance(messages, list) or not messages:
                raise HeptaError(f'{where} has no "messages" list; each line must be {{"messages": [...]}}')
            conversations.append([_turn(m, f"{where} messages[{i}]", path.parent, image_size, channels)
                                  for i, m in enumerate(messages)])
    if not conversations:
        raise HeptaError(f"{path} holds no conversations; add lines of the form {{\"messages\": [...]}}")
    return conversations


def _turn(message, where: str, folder: Path, image_size: int, channels: int) -> tuple[str, list]:
    if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
        raise HeptaError(f"{where} needs a role, one of {', '.join(CHAT_ROLES)}")
    content = message.get("content")
    if isinstance(content, str):
        return message["role"], [content]
    if not isinstance(content, list):
        raise HeptaError(f"{where}.content must be a string or a list of text and image_url parts")
    parts: list = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append(part["text"])
        elif kind == "image_url" and isinstance(part.get("image_url"), dict) and isinstance(part["image_url"].get("url"), str):
            url = part["image_url"]["url"]
            try:
                data = read_data_url(url) if url.startswith("data:") else read_local_image(folder / url)
                parts.append(PixelPart(decode_image(data, image_size, channels)))
            except ImageInputError as e:
                raise HeptaError(f"{where}.content[{j}]: {e}") from e
        else:
            raise HeptaError(f'{where}.content[{j}] must be {{"type": "text", "text": ...}} or '
                             '{"type": "image_url", "image_url": {"url": ...}}')
    return message["role"], parts


def conversation_images(conversations: list[list[tuple[str, list]]]) -> np.ndarray:
    """Every image of the conversations, stacked [N, P, S, S] (what the image tokenizer learns from)."""
    images = [p.pixels for turns in conversations for _, parts in turns for p in parts if isinstance(p, PixelPart)]
    if not images:
        raise HeptaError("the conversations hold no images, so there is nothing to train an image tokenizer on; "
                         "add image_url parts or pass --image-tokenizer")
    return np.stack(images)


def tokenize_conversations(conversations: list[list[tuple[str, list]]], codec: ImageCodec) -> list[list[Turn]]:
    """Pixel parts -> code parts, all images of all conversations through the image tokenizer in one pass."""
    pixel_parts = [p for turns in conversations for _, parts in turns for p in parts if isinstance(p, PixelPart)]
    codes = iter(codec.codes(np.stack([p.pixels for p in pixel_parts]))) if pixel_parts else iter(())
    return [[Turn(role, tuple(ImageCodes(next(codes)) if isinstance(p, PixelPart) else p for p in parts))
             for role, parts in turns] for turns in conversations]


# --- the embedded default --------------------------------------------------------------------------

# Recognition also sees each training digit moved one pixel in each direction and turned a little
# either way: the same digit under a different code grid, which the 1,438 scans alone show too rarely.
RECOGNITION_SHIFTS = tuple((dx, dy) for dx in (-1, 0, 1) for dy in (-1, 0, 1) if dx or dy)
RECOGNITION_ROTATIONS = (-15.0, -8.0, 8.0, 15.0)  # degrees
# Share of each step's conversations per task, whatever the number of examples behind each.
DIGIT_TASK_SHARES = {"recognise": 0.55, "draw": 0.07, "edit": 0.38}


def translate(images: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """Move images [..., S, S] by (dx, dy) pixels, filling with black."""
    out = np.zeros_like(images)
    size = images.shape[-1]
    src_y, dst_y = slice(max(-dy, 0), size - max(dy, 0)), slice(max(dy, 0), size - max(-dy, 0))
    src_x, dst_x = slice(max(-dx, 0), size - max(dx, 0)), slice(max(dx, 0), size - max(-dx, 0))
    out[..., dst_y, dst_x] = images[..., src_y, src_x]
    return out


def rotate(images: np.ndarray, degrees: float) -> np.ndarray:
    """Turn grey images [N, 1, S, S] about their centre (Pillow, bilinear), filling with black."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(image[0], mode="F").rotate(degrees, Image.Resampling.BILINEAR))[None]
                     for image in images]).astype(np.float32)


@dataclass
class Conversations:
    turns: list[list[Turn]]
    weights: list[float] | None = None  # relative chance of each being drawn; None: all alike


def recognition_views(images: np.ndarray) -> list[np.ndarray]:
    """The views of grey images [N, 1, S, S] that recognition learns from beside the images themselves: each
    moved by RECOGNITION_SHIFTS, then each turned by RECOGNITION_ROTATIONS."""
    return ([translate(images, dx, dy) for dx, dy in RECOGNITION_SHIFTS]
            + [rotate(images, degrees) for degrees in RECOGNITION_ROTATIONS])


def digit_conversations(codec: ImageCodec, augment: bool = True) -> Conversations:
    """Recognise, draw and edit, over the training 80% of the digits only, drawn in DIGIT_TASK_SHARES."""
    train = digits.load_digits_split("train")
    codes = codec.codes(train.images)
    labels = train.labels.tolist()
    tasks: dict[str, list] = {"recognise": [digits.recognise_turns(c, d) for c, d in zip(codes, labels)],
                              "draw": [digits.draw_turns(d, c) for c, d in zip(codes, labels)], "edit": []}
    for name, edit in digits.EDITS.items():
        tasks["edit"] += [digits.edit_turns(c, name, e) for c, e in zip(codes, codec.codes(edit(train.images)))]
    if augment:
        for view in recognition_views(train.images):
            tasks["recognise"] += [digits.recognise_turns(c, d) for c, d in zip(codec.codes(view), labels)]
    turns = [t for examples in tasks.values() for t in examples]
    weights = [DIGIT_TASK_SHARES[task] / len(examples) for task, examples in tasks.items() for _ in examples]
    return Conversations(turns, weights)


def mix(first: Conversations, second: Conversations, second_share: float) -> Conversations:
    """One set drawing `second` at `second_share` of the time and `first` at the rest."""
    def normalised(c: Conversations) -> list[float]:
        weights = c.weights or [1.0] * len(c.turns)
        total = sum(weights)
        return [w / total for w in weights]

    return Conversations(first.turns + second.turns, [w * (1 - second_share) for w in normalised(first)]
                         + [w * second_share for w in normalised(second)])


# --- batches ---------------------------------------------------------------------------------------

@dataclass
class ChatExamples:
    ids: torch.Tensor  # int64 [N, Tmax], padded with pad_id
    targets: torch.Tensor  # int64 [N, Tmax]: the next id where it is an answer token, IGNORE elsewhere
    lengths: torch.Tensor  # int64 [N]
    weights: torch.Tensor | None = None  # float [N]: chance of being drawn; None: uniform

    def __len__(self) -> int:
        return len(self.lengths)


def encode_examples(conversations: Conversations, tokenizer: Tokenizer, codec: ImageCodec | None,
                    max_len: int, audio: AudioVocab | None = None) -> ChatExamples:
    rows = [encode_chat(turns, tokenizer, codec.vocab if codec else None, add_generation_prompt=False, audio=audio)
            for turns in conversations.turns]
    longest = max(len(ids) for ids, _ in rows)
    if longest > max_len + 1:
        raise HeptaError(f"a conversation is {longest} tokens long, more than the {max_len + 1} a training row holds; "
                         "shorten it or raise --seq-len")
    ids, targets, lengths = pad_rows(rows, tokenizer.special_ids["<|pad|>"])
    weights = torch.tensor(conversations.weights, dtype=torch.float64) if conversations.weights else None
    return ChatExamples(ids, targets, lengths, weights)


def pad_rows(rows: list[tuple[list[int], list[bool]]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Encoded conversations (ids, is-answer per id) -> ids and targets [N, longest], lengths [N]."""
    longest = max(len(ids) for ids, _ in rows)
    ids = torch.full((len(rows), longest), pad, dtype=torch.long)
    targets = torch.full((len(rows), longest), IGNORE, dtype=torch.long)
    for n, (row, answer) in enumerate(rows):
        ids[n, :len(row)] = torch.tensor(row)
        # position t predicts id t+1: a target wherever the next id is part of an answer
        next_is_answer = torch.tensor(answer[1:], dtype=torch.bool)
        targets[n, :len(row) - 1] = torch.where(next_is_answer, torch.tensor(row[1:]), IGNORE)
    return ids, targets, torch.tensor([len(r) for r, _ in rows])


def sample_chat_batch(examples: ChatExamples, batch_size: int, generator: torch.Generator,
                      shard: tuple[int, int] = (0, 1),
                      length_groups: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Inputs and targets [B, T] of this rank's rows, sorted by length and split into at most
    `length_groups` batches of about equal rows, each cut to its own longest conversation.

    One batch pads every row to the longest: a 35-token digit question padded to a 130-token
    utterance. With the omni-tiny mixture half a single batch's positions are padding; in three
    groups a fifth are (benchmarks/chat_padding.py).
    """
    index, count = shard
    if examples.weights is None:
        picks = torch.randint(0, len(examples), (batch_size,), generator=generator)
    else:
        picks = torch.multinomial(examples.weights, batch_size, replacement=True, generator=generator)
    rows = batch_size // count
    picks = picks[index * rows:(index + 1) * rows]
    picks = picks[examples.lengths[picks].argsort(stable=True)]
    batches = []
    for group in picks.chunk(length_groups):
        width = int(examples.lengths[group].max()) - 1
        batches.append((examples.ids[group, :width], examples.targets[group, :width]))
    return batches


def _answer_starts(answer_N: torch.Tensor) -> torch.Tensor:
    # an answer starts where the position before is not one (rows end in padding, so none runs across rows)
    return answer_N & ~torch.cat([answer_N.new_zeros(1), answer_N[:-1]])


def first_in_each_answer(targets_BT: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """bool [B, T]: in each answer (a run of answer positions), the first position whose target is one of `ids`."""
    answer_N = (targets_BT != IGNORE).flatten()
    hits_N = torch.isin(targets_BT.flatten(), torch.tensor(ids)) & answer_N
    starts_N = _answer_starts(answer_N)
    answer_of_N = torch.cumsum(starts_N.long(), 0)  # 1 for the first answer; positions after one keep its number
    hits_so_far_N = torch.cumsum(hits_N.long(), 0)
    hits_before_answer = hits_so_far_N.new_zeros(int(answer_of_N[-1]) + 1)
    hits_before_answer[answer_of_N[starts_N]] = (hits_so_far_N - hits_N.long())[starts_N]
    return (hits_N & (hits_so_far_N - hits_before_answer[answer_of_N] == 1)).view_as(targets_BT)


def count_answers(targets_BT: torch.Tensor) -> int:
    """How many answers (runs of consecutive answer positions) the rows hold."""
    return int(_answer_starts((targets_BT != IGNORE).flatten()).sum())


def conversation_loss(logits_NV: torch.Tensor, targets_BT: torch.Tensor, num_answers: int | None = None,
                      weights_BT: torch.Tensor | None = None, weights_move: bool = False) -> torch.Tensor:
    """Cross-entropy (fp32) averaged over each answer's tokens, then over the answers.

    `logits_NV` holds the answer positions only (`targets_BT != IGNORE`, row-major), as the model
    returns them with `logits_at_BT`. An answer is a run of consecutive answer positions (an
    assistant turn and its `<|end|>`). Every answer weighs the same, whatever its length: a
    one-digit answer counts as much as a 22-token image, so recognition is not drowned out by the
    image-writing tasks, and each question about a video as much as the clip's whole timeline.
    `num_answers` divides the answers' sum instead of their own count: the batches of one draw
    (`sample_chat_batch`'s length groups) then add up to the mean over the whole draw. `weights_BT`
    multiplies each token's loss before its answer's mean, which still divides by the token count:
    a weighted token adds to the loss without lowering the other tokens' share of it (though where the
    step's gradient is clipped, the others then get less of the step). With `weights_move`, each answer's mean
    divides by its tokens' summed weight instead, so a weighted token takes its share from the answer's other
    tokens and every answer still weighs the same.
    """
    answer_N = (targets_BT != IGNORE).flatten()
    per_token = torch.nn.functional.cross_entropy(logits_NV.float(), targets_BT.flatten()[answer_N], reduction="none")
    if weights_BT is not None:
        per_token = per_token * weights_BT.flatten()[answer_N]
    starts_N = _answer_starts(answer_N)
    answer_of_token = (torch.cumsum(starts_N.long(), 0) - 1)[answer_N]
    own_answers = int(starts_N.sum())
    sums = per_token.new_zeros(own_answers).index_add(0, answer_of_token, per_token)
    counts = (per_token.new_zeros(own_answers).index_add(0, answer_of_token, weights_BT.flatten()[answer_N].float())
              if weights_BT is not None and weights_move else torch.bincount(answer_of_token, minlength=own_answers))
    return (sums / counts).sum() / (num_answers or own_answers)
