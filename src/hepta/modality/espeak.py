"""Speech synthesis with eSpeak NG, through ctypes on the library that `espeakng-loader` bundles.

Why ctypes on the bundled library: the espeakng-loader wheel carries libespeak-ng.so with its
voices and dictionaries, so nothing comes from the system package manager and `make demo`
speaks on a fresh machine after `pip install`. (The Python eSpeak wrappers want the system
library, or start the `espeak-ng` program once per utterance.)

eSpeak NG is process-global and not thread-safe: the voice, the rate and pitch, and the
callback that receives audio are library globals. It is initialised once per process, lazily,
and one lock is held through initialisation and through each whole synthesis. Its output also
depends slightly on what it said before in the process (the pitch flutter and glottal phase
carry over), so the same call gives the same words and length but not the same samples twice.

Waves are float32 mono at 16 kHz in [-1, 1]; eSpeak speaks at 22,050 Hz; soxr resamples it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading

import numpy as np
import soxr

from hepta.errors import HeptaError

SAMPLE_RATE = 16000
TRAILING_ZEROS_KEPT_S = 0.05  # eSpeak pads with exact zeros; keep a short tail, drop the rest

# Values from eSpeak NG's speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02  # espeak_Synth returns when the audio has gone to the callback
_INITIALIZE_DONT_EXIT = 0x8000  # without it a missing data folder makes the library call exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAMETER_RATE = 1  # words per minute, 80 to 450
_PARAMETER_PITCH = 3  # 0 to 100, 50 is the voice's own
_EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_native_rate = 0
_chunks: list[np.ndarray] = []  # int16 audio of the synthesis in progress, filled by the callback


@_SynthCallback
def _receive_audio(samples, count, events):
    # Runs inside espeak_Synth, under _lock. An exception here would be printed and lost, so keep it trivial.
    if samples and count > 0:
        _chunks.append(np.ctypeslib.as_array(samples, shape=(count,)).copy())
    return 0  # 0: go on synthesizing


def _loader():
    try:
        import espeakng_loader
    except ImportError as e:
        raise HeptaError("speech synthesis needs eSpeak NG's bundled library; install it with "
                         "`pip install espeakng-loader`") from e
    return espeakng_loader


def _initialise() -> None:
    """Load and initialise the library once per process. Call with _lock held."""
    global _library, _native_rate
    if _library is not None:
        return
    loader = _loader()
    data_path = loader.get_data_path()
    try:
        library = ctypes.CDLL(loader.get_library_path())
    except OSError as e:
        raise HeptaError(f"eSpeak NG's bundled library did not load ({e}); reinstall it with "
                         "`pip install --force-reinstall espeakng-loader`") from e
    library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    library.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    library.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    native_rate = library.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT)
    if native_rate <= 0:
        raise HeptaError(f"eSpeak NG did not start with its data at {data_path}; reinstall it with "
                         "`pip install --force-reinstall espeakng-loader`")
    library.espeak_SetSynthCallback(_receive_audio)
    _library, _native_rate = library, native_rate


@functools.cache
def _variants() -> tuple[str, ...]:
    return tuple(sorted(os.listdir(os.path.join(_loader().get_data_path(), "voices", "!v"))))


def voice_variants() -> list[str]:
    """The voice variants eSpeak NG ships (files in its voices/!v folder), sorted: "f1".."f5", "m1".."m8", "klatt", ..."""
    return list(_variants())


def __getattr__(name: str):
    # VOICE_VARIANTS is read from the installed data on first use, so importing this module
    # neither touches the disk nor fails where espeakng-loader is missing.
    if name == "VOICE_VARIANTS":
        return _variants()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _voice_name(language: str, variant: str | None) -> str:
    if variant is None:
        return language
    if variant not in _variants():
        raise HeptaError(f"eSpeak NG has no voice variant {variant!r}; choose one of "
                         f"{', '.join(_variants()[:8])}, ... (hepta.modality.espeak.voice_variants() lists all)")
    return f"{language}+{variant}"


def synthesize(text: str, variant: str | None = None, rate: int = 175, pitch: int = 50,
               language: str = "en-us") -> np.ndarray:
    """Speak text: float32 mono wave at 16 kHz in [-1, 1].

    variant: one of voice_variants() ("f3", "m1", ...), or None for the language's own voice.
    rate: words per minute (80-450). pitch: 0-100, 50 being the voice's own.
    """
    voice = _voice_name(language, variant).encode()
    with _lock:
        _initialise()
        if _library.espeak_SetVoiceByName(voice) != _EE_OK:
            # A failed change silently keeps the previous voice, so it must be an error.
            raise HeptaError(f"eSpeak NG has no voice {voice.decode()!r}; pass a language code such as 'en-us'")
        _library.espeak_SetParameter(_PARAMETER_RATE, int(rate), 0)
        _library.espeak_SetParameter(_PARAMETER_PITCH, int(pitch), 0)
        encoded = text.encode("utf-8") + b"\0"
        _chunks.clear()
        try:
            status = _library.espeak_Synth(encoded, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            _library.espeak_Synchronize()
            assert status == _EE_OK, f"espeak_Synth returned {status}"
            samples = np.concatenate(_chunks) if _chunks else np.zeros(0, np.int16)
        finally:
            _chunks.clear()
        native_rate = _native_rate

    speaking = np.flatnonzero(samples)
    end = 0 if len(speaking) == 0 else speaking[-1] + 1
    samples = samples[:min(len(samples), end + round(TRAILING_ZEROS_KEPT_S * native_rate))]
    wave = soxr.resample(samples.astype(np.float32) / 32768, native_rate, SAMPLE_RATE)
    return np.clip(wave, -1.0, 1.0, out=wave)
