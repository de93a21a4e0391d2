"""The speech side of a run: many utterances encoded a chunk at a time, the tokenizer's share of them."""

import torch

from hepta.modality import speech_data
from hepta.modality.audio_codec import AudioCodec
from hepta.modality.audio_span import AudioVocab
from hepta.modality.audio_tokenizer import AudioTokenizer
from hepta.modality.audio_tokenizer_config import AudioTokenizerConfig
from hepta.train import speech_setup
from hepta.train.recipes import SpeechRecipe

CONFIG = AudioTokenizerConfig(hidden=16)


def test_utterances_are_encoded_a_chunk_at_a_time_and_keep_only_their_codes(monkeypatch):
    torch.manual_seed(0)
    codec = AudioCodec(AudioTokenizer(CONFIG), AudioVocab(code_start=100, num_codes=CONFIG.codebook_size,
                                                          start_id=98, end_id=99))
    whole = speech_data.varied_utterances("train", 5, seed=3)
    expected = codec.codes_of_many([u.wave for u in whole])
    calls = []
    original = codec.codes_of_many
    monkeypatch.setattr(codec, "codes_of_many", lambda waves: calls.append(len(waves)) or original(waves))
    monkeypatch.setattr(speech_setup, "ENCODE_CHUNK", 2)
    pairs = list(speech_setup.encoded(codec, speech_data.iter_varied_utterances("train", 5, seed=3)))
    assert calls == [2, 2, 1]
    assert [u.text for u, _ in pairs] == [u.text for u in whole]
    assert all(u.wave is None for u, _ in pairs)
    assert all(torch.equal(codes, want) for (_, codes), want in zip(pairs, expected))


def test_the_audio_tokenizer_trains_on_the_first_utterances_of_the_run():
    recipe = SpeechRecipe(CONFIG, 1, recognition_utterances=9, synthesis_utterances=4, tokenizer_utterances=4)
    recognition, synthesis = speech_setup.speech_utterances(recipe, seed=2)
    assert [u.text for u in recognition] == [u.text for u in speech_data.varied_utterances("train", 9, seed=2)][:4]
    assert len(synthesis) == 2
    assert speech_setup.utterance_counts(recipe) == (9, 4)
    assert speech_setup.utterance_counts(recipe, recognition=6) == (6, 3)
    source = speech_setup.SpeechData(1000, None, recipe, 2, *speech_setup.utterance_counts(recipe)).source
    assert "9 sentences said by" in source and "4 by the house voice" in source


def test_recognition_utterances_are_speed_perturbed_unless_the_run_turns_it_off(monkeypatch):
    recipe = SpeechRecipe(CONFIG, 1, recognition_utterances=9, synthesis_utterances=4, speed_range=(0.9, 1.1))
    asked = []
    monkeypatch.setattr(speech_data, "iter_varied_utterances", lambda *a: asked.append(a) or iter(()))
    monkeypatch.setattr(speech_data, "iter_house_utterances", lambda *a: iter(()))
    monkeypatch.setattr(speech_setup.SpeechData, "codec", lambda self, tokenizer: None)
    for speed_range in (recipe.speed_range, None):
        speech = speech_setup.SpeechData(1000, None, recipe, 2, 9, 4, speed_range=speed_range)
        speech.conversations(tokenizer=None)
        assert asked.pop() == ("train", 9, 2, speed_range)
        assert ("slowed down by 0.9-1.1x" in speech.source) == (speed_range is not None)
