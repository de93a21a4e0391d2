"""The audio tokenizer: codes at a fixed rate, the folder it is saved in, a short training that
learns, and streamed decoding that matches decoding in one piece."""

import numpy as np
import pytest
import torch

from hepta.errors import HeptaError
from hepta.modality import espeak
from hepta.modality.audio_stream import StreamingDecoder
from hepta.modality.audio_tokenizer import AudioTokenizer, load_audio_tokenizer
from hepta.modality.audio_tokenizer_config import AudioTokenizerConfig
from hepta.modality.audio_train import evaluate_audio_tokenizer, mel_distance, train_audio_tokenizer

SMALL = AudioTokenizerConfig(hidden=16)


@pytest.mark.parametrize("seconds", [0.01, 0.5, 1.234, 3.0])
def test_a_clip_becomes_25_codes_a_second_and_decodes_to_its_length(seconds):
    tokenizer = AudioTokenizer(SMALL).eval()
    samples = round(seconds * 16000)
    codes = tokenizer.encode(torch.zeros(1, samples))
    assert codes.shape == (1, SMALL.num_codes_for(samples))
    assert abs(codes.shape[1] - seconds * 25) <= 1.1
    assert int(codes.min()) >= 0 and int(codes.max()) < SMALL.codebook_size
    wave = tokenizer.decode(codes)
    assert abs(wave.shape[1] - samples) < SMALL.samples_per_code + 160  # whole codes, and the last frame's hop
    assert tokenizer.decode(codes, speed=2.0).shape[1] == pytest.approx(wave.shape[1] / 2, rel=0.02)


def test_the_folder_round_trips_and_a_bad_one_is_named(tmp_path):
    tokenizer = AudioTokenizer(SMALL).eval()
    tokenizer.save(tmp_path / "audio_tokenizer")
    loaded = load_audio_tokenizer(tmp_path)
    wave = torch.from_numpy(espeak.synthesize("turn on the lights"))[None]
    assert torch.equal(loaded.encode(wave), tokenizer.encode(wave))
    assert load_audio_tokenizer(tmp_path / "nothing") is None
    (tmp_path / "broken").mkdir()
    with pytest.raises(HeptaError, match="not an audio tokenizer folder"):
        AudioTokenizer.load(tmp_path / "broken")


TEXTS = ("turn on the lights", "open the door", "set the timer to five", "move left two steps", "three four five six")


@pytest.fixture(scope="module")
def waves():
    return [espeak.synthesize(text) for text in TEXTS]


@pytest.fixture(scope="module")
def trained(waves):
    return train_audio_tokenizer(waves, AudioTokenizerConfig(hidden=32), steps=60, batch_size=8)


def test_a_short_training_reconstructs_better_than_the_untrained_tokenizer(waves, trained):
    untrained, _ = evaluate_audio_tokenizer(AudioTokenizer(trained.config).eval(), waves[:2])
    trained, rebuilt = evaluate_audio_tokenizer(trained, waves[:2])
    assert trained.mel_distance < 0.8 * untrained.mel_distance
    assert trained.codes_used > 4  # the encoder's range did not collapse onto the extreme levels
    assert [len(r) for r in rebuilt] == [len(w) for w in waves[:2]]


def test_streamed_decoding_sends_chunks_early_and_matches_one_piece_decoding(waves, trained):
    tokenizer = trained
    codes = tokenizer.encode(torch.from_numpy(waves[2])[None])[0].tolist()
    whole = tokenizer.decode(torch.tensor(codes)[None])[0].numpy()
    decoder = StreamingDecoder(tokenizer)
    chunks, ready_after = [], []
    for n, code in enumerate(codes, 1):
        new = decoder.push([code])
        chunks += new
        ready_after += [n] * len(new)
    chunks.append(decoder.finish())
    streamed = np.concatenate(chunks)
    assert ready_after and ready_after[0] == decoder.chunk_codes + decoder.lookahead_codes
    assert len(streamed) == len(whole)
    # the same sound: the streamed clip's spectrogram is far nearer the whole one's than another clip's is
    other = tokenizer.decode(tokenizer.encode(torch.from_numpy(waves[3])[None]))[0].numpy()
    assert mel_distance(whole, streamed) < 0.5 * mel_distance(whole, other)
