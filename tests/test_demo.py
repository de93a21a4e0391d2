import soundfile

import hepta.demo as demo
from hepta.train.loop import TrainArgs
from helpers import micro_overrides


def test_demo_trains_generates_shows_presets_and_reuses_a_finished_run(tmp_path, corpus, monkeypatch, capsys):
    def small_args(out):
        # a context long enough for the recipe's longest video clip (and the posts a grounded answer reads)
        # and room for the image and audio code blocks (125 + 1000 codes) beside the micro vocabulary
        overrides = {**micro_overrides(), "max_seq_len": 6144, "vocab_size": 512 + 125 + 1000}
        return TrainArgs(out=str(out), preset="omni-tiny", data=str(corpus), overrides=overrides, steps=6,
                         batch_size=4, seq_len=96, chat_batch_size=4, image_tokenizer_steps=10,
                         audio_tokenizer_steps=5, speech_utterances=6, save_every=3, eval_every=3, eval_batches=2)

    monkeypatch.setattr(demo, "demo_args", small_args)
    demo.run_demo(tmp_path / "demo", quiet=True)
    first = capsys.readouterr().out
    assert "validation loss" in first and "before training" in first
    assert demo.DEMO_PROMPT.strip() in first
    assert "grok5-7t" in first and "7.02T" in first
    assert "OpenAI-compatible API at http://127.0.0.1:" in first and "streamed chunks" in first
    assert "opinion on 'rocket launch'" in first and "cited: https://x.com/i/status/" in first
    assert "What digit is this? ->" in first and "client.images.edit" in first
    from PIL import Image
    assert Image.open(tmp_path / "demo" / "drawn_digits.png").width > 10 * 128  # ten digits side by side
    assert Image.open(tmp_path / "demo" / "edited_digit.png").width > 2 * 128
    assert "client.audio.speech" in first and "client.audio.transcriptions" in first and "-> heard" in first
    assert soundfile.info(str(tmp_path / "demo" / "speech.wav")).duration > 0
    assert "the clip shows 9 at 0:03, 4 at 0:08" in first
    assert "Which digit appeared third? ->" in first and "(the clip says '5'" in first

    demo.run_demo(tmp_path / "demo", quiet=True)
    second = capsys.readouterr().out
    assert "reusing the finished run" in second
