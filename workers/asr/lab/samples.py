"""The shipped demo samples: held-out call turns (4-10 s) with reference text and word times.

Sentences come from the generator's held-out pool (never in training or the LM) and voices from the
held-out variants; every third turn goes through the 8 kHz mu-law telephone round trip and some get
light background noise, so the demo's ten "phone calls" sound like calls, not studio speech.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch

from workers.asr.audio import SAMPLE_RATE, resample, telephone, write_wav
from workers.asr.lab import domain
from workers.asr.lab.synth import HELDOUT_VARIANTS, _clip_record

LEAD_S, TAIL_S = 0.25, 0.35


def write_samples(folder: Path, count: int = 12, seed: int = 42) -> int:
    """Synthesize `count` turns into folder/callNN.wav and folder/manifest.json; returns the count."""
    from workers.asr.lab.espeak import Espeak

    eng = Espeak()
    rng = random.Random(seed)
    stream = domain.sentences(seed, held_out=True)
    folder.mkdir(parents=True, exist_ok=True)
    entries: list[dict] = []
    seen: set[str] = set()
    while len(entries) < count:
        text = next(stream)
        if text in seen:
            continue
        seen.add(text)
        settings = {
            "voice": f"{rng.choice(['en-us', 'en-us', 'en-us-nyc', 'en-029', 'en'])}+{rng.choice(HELDOUT_VARIANTS)}",
            "rate": rng.randint(140, 185),
            "pitch": rng.randint(25, 75),
            "range": rng.randint(30, 80),
            "wordgap": 0,
        }
        audio, meta = _clip_record(eng, text, settings)
        seconds = len(audio) / meta["rate_hz"] + LEAD_S + TAIL_S
        if not 4.0 <= seconds <= 10.0 or len(meta["words"]) != len(text.split()):
            continue
        x = resample(torch.from_numpy(audio.astype(np.float32) / 32768), meta["rate_hz"], SAMPLE_RATE)
        x = torch.nn.functional.pad(x / x.abs().max() * 0.7, (int(LEAD_S * SAMPLE_RATE), int(TAIL_S * SAMPLE_RATE)))
        k = len(entries)
        channel = "telephone 8 kHz mu-law" if k % 3 == 2 else "wideband 16 kHz"
        if k % 3 == 2:
            x = telephone(x)
        if k % 2 == 1:
            gen = torch.Generator().manual_seed(seed + k)
            x = x + torch.randn(x.shape, generator=gen) * x.square().mean().sqrt() * 10 ** (-30 / 20)
        name = f"call{k + 1:02d}.wav"
        write_wav(folder / name, x.clamp(-1, 1).numpy())
        words = [
            {"word": w, "start_s": round(s + LEAD_S, 3), "end_s": round(e + LEAD_S, 3)} for w, s, e in meta["words"]
        ]
        entries.append(
            {
                "file": name,
                "text": text,
                "duration_s": round(len(x) / SAMPLE_RATE, 3),
                "voice": settings["voice"],
                "rate_wpm": settings["rate"],
                "channel": channel,
                "noise": "30 dB SNR" if k % 2 == 1 else "none",
                "words": words,
                "word_ends_s": [w["end_s"] for w in words],
            }
        )
    manifest = {
        "description": "held-out synthetic call turns (espeak-ng); sentences and voices unseen in training",
        "sample_rate": SAMPLE_RATE,
        "samples": entries,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return len(entries)
