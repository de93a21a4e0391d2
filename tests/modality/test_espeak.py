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
