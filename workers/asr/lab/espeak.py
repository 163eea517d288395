"""espeak-ng through its C library (ctypes), so one process synthesizes thousands of clips without a
subprocess per clip, and the library's word and phoneme events give exact alignments for free."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_DONT_EXIT = 0x8000
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EV_END_OF_LIST = 0
_EV_WORD = 1
_EV_PHONEME = 7
_PARAM = {"rate": 1, "volume": 2, "pitch": 3, "range": 4, "wordgap": 7}

INSTALL_HINT = "espeak-ng is missing: install it with `make setup` or `sudo apt-get install espeak-ng`"


class EspeakMissing(RuntimeError):
    """espeak-ng (its library or its data) cannot be found on this machine."""


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))


@dataclass(frozen=True)
class Utterance:
    """One synthesized clip: int16 audio at `sample_rate`, and per word its phonemes with start times (s)."""

    audio: np.ndarray
    sample_rate: int
    words: list[tuple[str, list[tuple[str, float]]]]
    end_s: float


def _find_library() -> tuple[str, str | None]:
    """The library path and the folder holding espeak-ng-data; ESPEAK_LIB/ESPEAK_DATA override (device runs)."""
    lib = os.environ.get("ESPEAK_LIB") or ctypes.util.find_library("espeak-ng")
    if not lib:
        raise EspeakMissing(INSTALL_HINT)
    return lib, os.environ.get("ESPEAK_DATA")


def espeak_available() -> bool:
    """True when the espeak-ng library can be loaded (the CLI checks this before synthesizing)."""
    try:
        lib, _ = _find_library()
        ctypes.CDLL(lib)
    except (EspeakMissing, OSError):
        return False
    return True


class Espeak:
    """One initialized espeak-ng engine per process (the library holds global state)."""

    def __init__(self) -> None:
        lib_path, data = _find_library()
        try:
            self._lib = ctypes.CDLL(lib_path)
        except OSError as exc:
            raise EspeakMissing(f"{INSTALL_HINT} ({exc})") from exc
        self._lib.espeak_Initialize.restype = ctypes.c_int
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.sample_rate = self._lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode() if data else None, _INIT_PHONEME_EVENTS | _INIT_DONT_EXIT
        )
        if self.sample_rate <= 0:
            raise EspeakMissing(f"espeak-ng could not load its data ({INSTALL_HINT})")
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, int, int, str]] = []
        self._cb = _Callback(self._on_audio)
        self._lib.espeak_SetSynthCallback(self._cb)

    def _on_audio(self, wav: Any, n: int, events: Any) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EV_END_OF_LIST:
            ev = events[i]
            if ev.type in (_EV_WORD, _EV_PHONEME):
                name = ev.id.string.decode("ascii", "replace") if ev.type == _EV_PHONEME else ""
                self._events.append((ev.type, ev.text_position, ev.audio_position, name))
            i += 1
        return 0

    def synth(self, text: str, voice: str, rate: int, pitch: int, pitch_range: int, wordgap: int = 0) -> Utterance:
        """Speak `text` (plain lower-case words separated by single spaces) with the given voice settings."""
        if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"unknown espeak-ng voice {voice!r}")
        for key, value in (("rate", rate), ("pitch", pitch), ("range", pitch_range), ("wordgap", wordgap)):
            self._lib.espeak_SetParameter(_PARAM[key], value, 0)
        self._chunks, self._events = [], []
        raw = text.encode("utf-8")
        buf = ctypes.create_string_buffer(raw)
        self._lib.espeak_Synth(buf, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        self._lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return Utterance(audio, self.sample_rate, _group_words(text, self._events), len(audio) / self.sample_rate)


def _group_words(text: str, events: list[tuple[int, int, int, str]]) -> list[tuple[str, list[tuple[str, float]]]]:
    """Attach each phoneme event to the word event before it; word events carry 1-based text positions."""
    starts: dict[int, str] = {}
    pos = 0
    for w in text.split(" "):
        starts[pos + 1] = w
        pos += len(w) + 1
    out: list[tuple[str, list[tuple[str, float]]]] = []
    for kind, text_pos, ms, name in events:
        if kind == _EV_WORD:
            out.append((starts.get(text_pos, "?"), []))
        elif out:
            out[-1][1].append((name, ms / 1000.0))
    return out
