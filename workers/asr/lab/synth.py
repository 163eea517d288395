"""Corpus synthesis with espeak-ng: many voices, rates and pitches; exact phoneme and word alignments.

Clips are stored at espeak-ng's native rate in shards (int16 audio + JSON alignments); training
resamples them to 16 kHz on its own device, which is far faster than per-clip resampling here.
Held-out clips use sentences the generator marks held out and voice variants training never uses.

    python -m workers.asr.synth --out data/corpus --split train -n 50000 --workers 16
"""

from __future__ import annotations

import argparse
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from workers.asr.lab import domain

if TYPE_CHECKING:
    from workers.asr.lab.espeak import Espeak

ACCENTS = ["en-us"] * 5 + ["en-us-nyc", "en", "en-gb-x-rp", "en-gb-scotland", "en-029", "en-gb-x-gbclan"]
TRAIN_VARIANTS = [
    "",
    "m1",
    "m2",
    "m4",
    "m5",
    "m6",
    "m7",
    "f1",
    "f2",
    "f3",
    "f5",
    "klatt",
    "klatt2",
    "klatt4",
    "Alex",
    "Andy",
    "belinda",
    "benjamin",
    "david",
    "edward",
    "john",
    "linda",
    "max",
    "paul",
    "iven",
    "norbert",
]
HELDOUT_VARIANTS = ["m3", "f4", "klatt3", "m8", "Annie", "michel", "robert", "steph"]
MAX_WORDS = 30


def _voice(rng: random.Random, held_out: bool) -> dict[str, int | str]:
    variant = rng.choice(HELDOUT_VARIANTS if held_out else TRAIN_VARIANTS)
    accent = rng.choice(ACCENTS)
    return {
        "voice": f"{accent}+{variant}" if variant else accent,
        "rate": rng.randint(125, 205),
        "pitch": rng.randint(20, 80),
        "range": rng.randint(20, 90),
        "wordgap": rng.choice([0, 0, 0, 0, 1, 2]),
    }


def _clip_record(eng: Espeak, text: str, settings: dict) -> tuple[np.ndarray, dict]:
    """Synthesize one clip and keep per-phoneme (name, start, end) and per-word (word, start, end)."""
    utt = eng.synth(
        text,
        str(settings["voice"]),
        int(settings["rate"]),
        int(settings["pitch"]),
        int(settings["range"]),
        int(settings["wordgap"]),
    )
    flat: list[tuple[int, str, float]] = [(wi, p, t) for wi, (_, ph) in enumerate(utt.words) for p, t in ph]
    phones, words = [], []
    spans: dict[int, list[float]] = {}
    for k, (wi, name, start) in enumerate(flat):
        end = flat[k + 1][2] if k + 1 < len(flat) else utt.end_s
        if name.startswith("_") or end <= start:
            continue  # pauses are not targets
        phones.append([name, round(start, 4), round(end, 4)])
        span = spans.setdefault(wi, [start, end])
        span[1] = end
    for wi, (word, _) in enumerate(utt.words):
        if wi in spans:
            words.append([word, round(spans[wi][0], 4), round(spans[wi][1], 4)])
    return utt.audio, {"text": text, **settings, "phones": phones, "words": words, "rate_hz": utt.sample_rate}


def _work(job: tuple[str, list[tuple[str, dict]]]) -> int:
    """Worker: synthesize one shard of clips into <path>.npz + <path>.json."""
    from workers.asr.lab.espeak import Espeak

    path, items = job
    eng = Espeak()
    audios, metas = [], []
    for text, settings in items:
        audio, meta = _clip_record(eng, text, settings)
        audios.append(audio)
        metas.append(meta)
    offsets = np.cumsum([0] + [len(a) for a in audios])
    np.savez(path + ".npz", audio=np.concatenate(audios), offsets=offsets)
    Path(path + ".json").write_text(json.dumps(metas))
    return len(items)


def plan(split: str, n: int, seed: int) -> list[tuple[str, dict]]:
    """Texts and voice settings for a split: train, heldout (unseen sentences + voices) or ood."""
    rng = random.Random(f"{split}-{seed}")
    items: list[tuple[str, dict]] = []
    if split == "ood":
        texts: Iterator[str] = iter(domain.OUT_OF_DOMAIN * (1 + n // len(domain.OUT_OF_DOMAIN)))
    else:
        texts = domain.sentences(seed, held_out=split != "train")
    seen: set[str] = set()
    while len(items) < n:
        text = next(texts)
        if len(text.split()) > MAX_WORDS or (split == "heldout" and text in seen):
            continue
        seen.add(text)
        items.append((text, _voice(rng, held_out=split != "train")))
    return items


def synthesize(out: Path, split: str, n: int, seed: int, workers: int, shard_size: int = 500) -> int:
    """Synthesize a split into out/<split>-NNNN.{npz,json} shards using `workers` processes."""
    out.mkdir(parents=True, exist_ok=True)
    items = plan(split, n, seed)
    jobs = [
        (str(out / f"{split}-{i // shard_size:04d}"), items[i : i + shard_size])
        for i in range(0, len(items), shard_size)
    ]
    if workers <= 1:
        return sum(_work(j) for j in jobs)
    with get_context("spawn").Pool(workers) as pool:
        return sum(pool.imap_unordered(_work, jobs))


def load_split(root: Path, split: str) -> tuple[list[np.ndarray], list[dict]]:
    """All clips of a split: int16 arrays at their native rate, and their metadata."""
    audios: list[np.ndarray] = []
    metas: list[dict] = []
    for npz in sorted(root.glob(f"{split}-*.npz")):
        data = np.load(npz)
        audio, offsets = data["audio"], data["offsets"]
        audios.extend(audio[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1))
        metas.extend(json.loads(npz.with_suffix(".json").read_text()))
    return audios, metas


def build_lexicon(metas: list[dict], min_share: float = 0.1, max_variants: int = 3) -> dict[str, list[str]]:
    """Pronunciations as espeak-ng spoke each word in context: variants with >= min_share of its uses."""
    seen: defaultdict[str, Counter[str]] = defaultdict(Counter)
    for m in metas:
        phones = m["phones"]
        for word, ws, we in m["words"]:
            if word == "?":
                continue  # a word event espeak-ng placed inside a word; its phones are ambiguous
            pron = " ".join(p for p, s, e in phones if s >= ws - 1e-6 and e <= we + 1e-6)
            if pron:
                seen[word][pron] += 1
    lexicon: dict[str, list[str]] = {}
    for word, variants in sorted(seen.items()):
        total = sum(variants.values())
        lexicon[word] = [p for p, c in variants.most_common(max_variants) if c >= min_share * total]
    return lexicon


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("data/corpus"))
    ap.add_argument("--split", choices=["train", "heldout", "ood"], default="train")
    ap.add_argument("-n", type=int, default=40000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    t0 = time.time()
    done = synthesize(args.out, args.split, args.n, args.seed, args.workers)
    print(f"synthesized {done} {args.split} clips into {args.out} in {time.time() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main()


def isolated_pronunciations(words: list[str]) -> dict[str, str]:
    """en-us pronunciation of each word spoken alone: the fallback for words rare in the corpus."""
    from workers.asr.lab.espeak import Espeak

    eng = Espeak()
    out: dict[str, str] = {}
    for w in words:
        _, meta = _clip_record(eng, w, {"voice": "en-us", "rate": 170, "pitch": 50, "range": 50, "wordgap": 0})
        pron = " ".join(p for p, _, _ in meta["phones"])
        if pron:
            out[w] = pron
    return out


def make_assets(
    corpus: Path, assets: Path, lm_sentences: int = 200000, seed: int = 5, keep_tokens: bool = True
) -> dict[str, object]:
    """Write tokens.txt, lexicon.txt and lm.arpa into `assets` from a synthesized train corpus.

    With keep_tokens and an existing tokens.txt, the token set stays as it is (a trained model's output
    layer is tied to it) and pronunciations using other phonemes are dropped.
    """
    from workers.asr.lab.lm import build_arpa

    _, metas = load_split(corpus, "train")
    lexicon = build_lexicon(metas)
    vocab = domain.vocabulary()
    missing = [w for w in vocab if w not in lexicon]
    for w, pron in isolated_pronunciations(missing).items():
        lexicon[w] = [pron]
    for w, pron in isolated_pronunciations(vocab).items():
        if pron not in lexicon[w] and len(lexicon[w]) < 4:
            lexicon[w].append(pron)
    token_file = assets / "tokens.txt"
    if keep_tokens and token_file.exists():
        known = set(token_file.read_text().split())
        lexicon = {w: kept for w, prons in lexicon.items() if (kept := [p for p in prons if set(p.split()) <= known])}
    else:
        phones = sorted(
            {p for prons in lexicon.values() for pr in prons for p in pr.split()}
            | {p for m in metas for p, _, _ in m["phones"]}
        )
        assets.mkdir(parents=True, exist_ok=True)
        token_file.write_text("\n".join(["<blank>", "|", *phones]) + "\n")
    with open(assets / "lexicon.txt", "w") as f:
        for w in sorted(lexicon):
            for pron in lexicon[w]:
                f.write(f"{w}\t{pron}\n")
    stream = domain.sentences(seed, held_out=False)
    counts = build_arpa((next(stream) for _ in range(lm_sentences)), lexicon.keys(), assets / "lm.arpa")
    tokens = len(token_file.read_text().split())
    return {"words": len(lexicon), "tokens": tokens, "ngrams": counts, "missing_in_corpus": len(missing)}
