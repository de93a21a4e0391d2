"""Training recipes of the presets whose vocabulary holds image (and audio) codes.

`hepta train --preset omni-tiny --out DIR`, with no other flag, runs the whole documented recipe:
the image and audio tokenizers, the text tokenizer with the image and then the audio code block
appended, and the model on the mixture of the text corpus, the conversations (digits and speech)
and questions about video clips. The flags a user gives override these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hepta.modality.audio_tokenizer_config import AudioTokenizerConfig
from hepta.modality.image_tokenizer_config import ImageTokenizerConfig
from hepta.modality.stamp_form import StampForm


@dataclass(frozen=True)
class SpeechRecipe:
    audio_tokenizer: AudioTokenizerConfig
    audio_tokenizer_steps: int
    recognition_utterances: int  # training sentences said by the training voices, varied and noisy
    synthesis_utterances: int  # distinct training sentences said by the house voice
    # the first recognition utterances the audio tokenizer trains on (and half as many synthesis ones)
    tokenizer_utterances: int = 4000
    # of the conversations drawn each step; the digit tasks share the rest
    task_shares: dict = field(default_factory=lambda: {"transcribe": 0.25, "say": 0.2})
    # with `hepta train --speed-perturbation`, recognition utterances are sped up or slowed down by a factor in
    # this range (speech_data.speed_perturbed); off by default, because it did not help (docs/multimodal.md)
    speed_range: tuple[float, float] = (0.88, 1.12)


@dataclass(frozen=True)
class VideoRecipe:
    fps: float  # frames sampled per second of video
    seconds: tuple[int, int]  # training clip lengths, shortest and longest (each step draws one, log-uniformly)
    tokens_per_step: int  # about this many video tokens a step: many clips, each with one question
    kinds: tuple[tuple[str, float], ...]  # the question kinds asked, with how often (one question a clip)
    # a curriculum of length: the longest clip is `first_longest` seconds at the start and grows
    # log-linearly to seconds[1] by `ramp` of the run; where the model does read a digit off its
    # frame (the first-digit probe of benchmarks/video_finetune.py) the clips hold 2 or 3 digits
    first_longest: int = 10
    ramp: float = 0.5
    # order and time answers walk the appearances up to the one asked about before answering
    # (video_data.walked)
    walk: bool = False
    cite: bool = False  # order and time answers first cite the frame caption they rest on (video_data.cited)
    # the question comes before the video, so every frame is read knowing what is asked
    question_first: bool = False
    # each frame followed by a caption the model learns to write (video_data.caption), and writes as it reads
    # when evaluated or served (infer/caption_writer.py)
    captions: bool = False
    # with question_first and captions: the caption of the frame that answers an order or time question
    # is marked (video_data.marked_caption), where that frame is read
    mark: bool = False
    # what goes between the mark and its answer (video_data.marked_caption): after " " the answer's first digit
    # is a token of its own (" 2"), after "" the very token the timestamps and the reply write ("2")
    mark_joiner: str = " "
    # a token before the last digit of a marked time ("0m1,4"; video_data.marked_caption), so the reply finds each
    # of its digits after a token only the mark holds
    mark_units_anchor: str = ""
    # the video questions' loss counts this many times beside the text's and the conversations' (each a mean);
    # `hepta train --video-loss-weight`. 3 was tried for the video-time answers: within the noise of them, and
    # with nearly every step's gradient clipped, the text, speech and images lost; 2, with no timeline questions,
    # answered order at 0.93 and time at 0.45 (docs/multimodal.md)
    loss_weight: float = 1.0
    # the loss of the token after each frame's caption, the mark or the caption's end, counts this many times
    # (VideoData.decision_weights): whether a frame answers the question is decided there, once a frame, where
    # every other caption token only reads the frame; `hepta train --video-mark-weight` (docs/multimodal.md)
    mark_weight: float = 1.0
    # the mark weight moves each caption's share to its decision rather than adding to it (conversation_loss's
    # `weights_move`), so the video loss's total, and the rest of a clipped step, stay as without the weight;
    # `hepta train --video-mark-weight-moves`
    mark_weight_moves: bool = False
    # how each frame's timestamp is written (video_span.StampForm; `hepta train --video-stamps`). The recipe's TENS
    # writes 0:14 as <|time_0|>:<|tens_1|><|time_4|>: a mark's seconds ("14", plain text) are then in no timestamp,
    # so a reply copies them from the mark alone, and the mark reads them from two tokens of different kinds, where
    # with one kind of digit token it swapped them ("41"; docs/multimodal.md)
    stamps: StampForm = StampForm.TEXT
    # the last `long_finish` of the run draws its clips from `long_shortest` seconds up to the longest: in the
    # log-uniform draw a clip long enough to hold a time past 2:00 is rare, and a model trained so writes "1m07"
    # for 2:07 in its marks; `hepta train --video-long-finish` (docs/multimodal.md)
    long_finish: float = 0.0
    long_shortest: int = 100
    # this share of the training clips has its clock start anywhere before `shift_before` seconds instead of at
    # 0:00, as a clip cut from a longer recording (video_data.shifted). From 0:00, a mark's minute is 0 or 1 in
    # nearly every clip, and a model so trained writes it from what the clip's length makes likely instead of
    # copying it from the frame's timestamp ("1m22" on a frame stamped 0:22); `hepta train --video-shifted-clocks`
    shifted_share: float = 0.0
    shift_before: int = 600
    # each digit of a training clip shows, for the whole clip, one of its scan's views drawn at random: the scan
    # itself or one of the moved and turned views image recognition learns from (conversations.recognition_views).
    # With the scans alone, the recipe's model read clips of training digits far better than held-out ones (order
    # 0.94 against 0.84): it knew the 1,438 training code grids by heart. `hepta train --no-video-frame-views`
    frame_views: bool = False


@dataclass(frozen=True)
class ImageRecipe:
    image_tokenizer: ImageTokenizerConfig
    image_tokenizer_steps: int
    train_defaults: dict = field(default_factory=dict)  # TrainArgs fields
    speech: SpeechRecipe | None = None
    video: VideoRecipe | None = None


IMAGE_RECIPES = {
    # 8x8 grey digits -> 4x4 codes of 5*5*5 = 125 (26 dB PSNR on held-out digits; 8*5*5*5 = 1000
    # codes gain 1.4 dB, but a model that sees 1,438 training digits learns 125 codes far better).
    "omni-tiny": ImageRecipe(
        image_tokenizer=ImageTokenizerConfig(image_size=8, channels=1, downsample=2, hidden=64, levels=(5, 5, 5)),
        image_tokenizer_steps=1500,
        train_defaults=dict(steps=2500, batch_size=8, seq_len=256, chat_batch_size=128, lr=3e-3, warmup=20,
                            save_every=250, eval_every=250, eval_batches=8, max_corpus_mb=12),
        # 25 codes a second of 8*5*5*5 = 1000 (FSQ), 1.3M parameters. After 1200 steps: held-out mel
        # distance 0.679, 554 codes used; the judge hears its house-voice reconstructions at a WER of
        # 0.152 against 0.140 for the originals (`hepta eval --task audio-tokenizer`, 100 sentences).
        # Recognition hears 40,000 utterances, each about twice over the run: with 4,000
        # seen 15 times each the model knew its training utterances by heart (WER 0.09) and missed
        # half the words of held-out ones (0.60; benchmarks/speech_finetune.py).
        speech=SpeechRecipe(audio_tokenizer=AudioTokenizerConfig(downsample=4, hidden=128, levels=(8, 5, 5, 5)),
                            audio_tokenizer_steps=1200, recognition_utterances=40000, synthesis_utterances=8000,
                            task_shares={"transcribe": 0.35, "say": 0.25}),
        # clips of 5 s to a little over the 3-minute evaluation length, 1 frame a second (~26 tokens
        # each, only the frames that show something new kept). The kinds that read digits off frames
        # come most often: counting needs none, and with every kind equally often probes learned to
        # count well before they read any digit (docs/multimodal.md). The question comes first and the
        # model captions each frame as it reads, marking the one that answers: order questions went from
        # 0.17 to 0.84 with it (hepta eval --task video-order; --no-video-captions is the ablation).
        # Without the timeline questions and with the video loss counted twice, order reached 0.93; with
        # timestamps a character a token, a reply copies the time from the mark it wrote. Half the clips' clocks
        # start before 10:00 rather than at 0:00, so the mark's minute is copied from the frame's timestamp rather
        # than guessed from the clip's length. With timestamps in time and tens tokens and the mark decision
        # weighted 4 times, time questions reached 0.92 and 0.97 at every length over two seeds; the weight costs
        # text loss (6% above a text-only run, against 0.6% for the recipe before it; docs/multimodal.md).
        video=VideoRecipe(fps=1.0, seconds=(5, 190), tokens_per_step=2400,
                          kinds=(("order", 3), ("time", 3), ("count", 1), ("at", 1)),
                          question_first=True, captions=True, mark=True, loss_weight=2.0, mark_weight=4.0,
                          stamps=StampForm.TENS, shifted_share=0.5, frame_views=True),
    ),
}


def image_recipe(preset: str) -> ImageRecipe | None:
    return IMAGE_RECIPES.get(preset)


def recipe_defaults(preset: str | None) -> dict:
    recipe = image_recipe(preset or "")
    return dict(recipe.train_defaults) if recipe else {}
