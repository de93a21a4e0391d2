"""eSpeak NG from its pip package: speech at 16 kHz, its voice variants, and the held-out split."""

import numpy as np
import pytest

from hepta.errors import HeptaError
from hepta.modality import espeak, speech_data, speech_domain


def test_it_speaks_at_16_khz_and_a_faster_rate_is_shorter():
    slow = espeak.synthesize("set the volume to seven", rate=130)
    fast = espeak.synthesize("set the volume to seven", rate=210)
    assert slow.dtype == np.float32 and np.abs(slow).max() <= 1.0
    assert 1.0 < len(slow) / 16000 < 4.0
    assert len(fast) < 0.8 * len(slow)


def test_variants_change_the_voice_and_an_unknown_one_is_named():
    plain = espeak.synthesize("open the door")
    other = espeak.synthesize("open the door", variant=speech_data.voices("train")[0])
    assert len(plain) != len(other) or not np.allclose(plain, other)
    with pytest.raises(HeptaError, match="no voice variant 'nosuchvoice'"):
        espeak.synthesize("hello", variant="nosuchvoice")


def test_held_out_voices_and_sentences_never_meet_training():
    train, held_out = speech_data.voices("train"), speech_data.voices("held_out")
    assert train and held_out and not set(train) & set(held_out)
    assert not set(speech_domain.sentences("train", 500, seed=0)) & set(speech_domain.sentences("held_out", 200, seed=0))
    words = set(speech_domain.vocabulary())
    assert all(set(s.split()) <= words for s in speech_domain.sentences("held_out", 200, seed=3))


def test_random_word_sequences_replace_a_share_of_the_training_templates_only():
    plain = speech_domain.sentences("train", 400, seed=2)
    mixed = speech_domain.sentences("train", 400, seed=2, word_share=0.3)
    templates = set(plain)
    sequences = [s for s in mixed if s not in templates]
    assert 80 <= len(sequences) <= 160  # about 0.3 of 400, the rest still template sentences
    in_order = iter(mixed)  # the templates come in the same order as without the mix, sequences between them
    assert all(any(s == t for s in in_order) for t in plain[:200])  # about 280 of the 400 are templates
    words = set(speech_domain.vocabulary())
    assert all(set(s.split()) <= words and 1 <= len(s.split()) <= 6 for s in sequences)
    assert not any(speech_domain.is_held_out_sentence(s) for s in mixed)
    with pytest.raises(ValueError, match="only training sentences"):
        speech_domain.sentences("held_out", 5, seed=0, word_share=0.3)


def _spectral_centroid(wave: np.ndarray) -> float:
    power = np.abs(np.fft.rfft(wave)) ** 2
    return float((np.fft.rfftfreq(len(wave), 1 / 16000) * power).sum() / power.sum())


def test_a_speed_perturbed_voice_is_shorter_and_higher_when_faster():
    wave = espeak.synthesize("turn on the lights")
    faster, slower = speech_data.speed_perturbed(wave, 1.1), speech_data.speed_perturbed(wave, 0.9)
    assert faster.dtype == np.float32
    assert abs(len(faster) - len(wave) / 1.1) <= 2 and abs(len(slower) - len(wave) / 0.9) <= 2
    assert _spectral_centroid(slower) < _spectral_centroid(wave) < _spectral_centroid(faster)


def test_speed_perturbation_changes_the_sound_of_training_utterances_only():
    plain = speech_data.varied_utterances("train", 12, seed=3)
    perturbed = speech_data.varied_utterances("train", 12, seed=3, speed_range=(0.88, 1.12))
    assert [(u.text, u.voice) for u in perturbed] == [(u.text, u.voice) for u in plain]
    ratios = [len(p.wave) / len(u.wave) for p, u in zip(perturbed, plain)]
    assert all(1 / 1.12 - 0.01 < r < 1 / 0.88 + 0.01 for r in ratios)
    assert sum(abs(r - 1) > 0.01 for r in ratios) >= 3  # most are perturbed, some by a factor near 1
    with pytest.raises(ValueError, match="only training utterances"):
        speech_data.varied_utterances("held_out", 2, seed=0, speed_range=(0.9, 1.1))


def test_a_split_s_sentences_can_be_said_by_the_other_split_s_voices():
    own = speech_data.varied_utterances("held_out", 6, seed=1)
    crossed = speech_data.varied_utterances("held_out", 6, seed=1, voice_split="train")
    assert [u.text for u in crossed] == [u.text for u in own]
    assert {u.voice for u in crossed} <= set(speech_data.voices("train"))
    assert {u.voice for u in own} <= set(speech_data.voices("held_out"))
