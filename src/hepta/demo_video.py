"""Video in `hepta demo`: a temporal question about the bundled clip of held-out digits, through the
`openai` client's chat with a video_url part, beside the answer the clip's ground truth gives."""

from __future__ import annotations

import base64
from importlib import resources

import numpy as np
from rich.console import Console

from hepta.modality import video_data

QUESTIONS = ("Which digit appeared third?", "When did the 5 first appear?", "How many digits appeared?")


def bundled_clip() -> tuple[bytes, video_data.Clip]:
    """The 30-second MP4 of held-out digits shipped with hepta, and its ground truth."""
    folder = resources.files("hepta.modality") / "data"
    return ((folder / "digits_clip.mp4").read_bytes(),
            video_data.Clip.from_json((folder / "digits_clip.json").read_text()))


def video_demo(console: Console, client, model_name: str) -> None:
    data, clip = bundled_clip()
    shown = ", ".join(f"{a.digit} at {video_data.clock(a.start)}" for a in clip.appearances)
    console.rule("video through the same API (a bundled 30-second clip of held-out digits)")
    console.print(f"the clip shows {shown}; sampled on the server at 1 frame a second", soft_wrap=True)
    url = "data:video/mp4;base64," + base64.b64encode(data).decode("ascii")
    for text in QUESTIONS:
        messages = [{"role": "user", "content": [{"type": "video_url", "video_url": {"url": url}},
                                                 {"type": "text", "text": text}]}]
        answer = client.chat.completions.create(model=model_name, max_tokens=video_data.ANSWER_TOKENS, temperature=0,
                                                messages=messages)
        reply = (answer.choices[0].message.content or "").strip()
        truth = _truth(clip, text)
        verdict = "right" if video_data.is_right(truth, reply) else "wrong"
        console.print(f"[bold]chat with a video_url part[/]: {text} -> {reply!r} (the clip says {truth.answer!r}: "
                      f"{verdict}; {answer.usage.prompt_tokens} prompt tokens)", soft_wrap=True)


def _truth(clip: video_data.Clip, text: str) -> video_data.VideoQuestion:
    """The ground-truth question of `clip` whose wording is `text`."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        for kind in video_data.QUESTION_KINDS:
            q = video_data.question(kind, clip, rng)
            if q.question == text:
                return q
    raise ValueError(f"{text!r} is not a question the clip answers")
