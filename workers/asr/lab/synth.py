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

from workers.asr.lab import domain, general

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


SPLITS = ("train", "heldout", "ood", "general", "gtrain")
TRAINING_SPLITS = ("train", "gtrain")


def plan(split: str, n: int, seed: int) -> list[tuple[str, dict]]:
    """Texts and voice settings for a split.

    train: domain sentences; heldout: unseen domain sentences; ood: the domain module's 30
    out-of-domain sentences; general: the hand-written general-English held-out set (each sentence
    once, at most n); gtrain: general training text over the full lexicon (`general.training_texts`).
    Every split but the two training ones is spoken by voice variants training never uses.
    """
    rng = random.Random(f"{split}-{seed}")
    items: list[tuple[str, dict]] = []
    if split == "ood":
        texts: Iterator[str] = iter(domain.OUT_OF_DOMAIN * (1 + n // len(domain.OUT_OF_DOMAIN)))
    elif split == "general":
        texts = iter(general.heldout_sentences())
        n = min(n, len(general.heldout_sentences()))
    elif split == "gtrain":
        texts = general.training_texts(seed, general.vocabulary())
    else:
        texts = domain.sentences(seed, held_out=split != "train")
    seen: set[str] = set()
    while len(items) < n:
        text = next(texts)
        if len(text.split()) > MAX_WORDS or (split == "heldout" and text in seen):
            continue
        seen.add(text)
        items.append((text, _voice(rng, held_out=split not in TRAINING_SPLITS)))
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
    ap.add_argument("--split", choices=SPLITS, default="train")
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


def complete_lexicon(metas: list[dict], vocab: list[str], token_file: Path | None) -> dict[str, list[str]]:
    """Pronunciations for every word of `vocab`: as spoken in the corpus, plus the isolated en-us form.

    Words the corpus never spoke get the isolated form only. With a token file, pronunciations using
    other phonemes are dropped (a trained model's output layer is tied to its tokens).
    """
    spoken = build_lexicon(metas)
    wanted = set(vocab)
    lexicon = {w: prons for w, prons in spoken.items() if w in wanted}
    for w, pron in isolated_pronunciations(vocab).items():
        variants = lexicon.setdefault(w, [])
        if pron not in variants and len(variants) < 4:
            variants.append(pron)
    if token_file is None:
        return lexicon
    known = set(token_file.read_text().split())
    return {w: kept for w, prons in lexicon.items() if (kept := [p for p in prons if set(p.split()) <= known])}


def write_lexicon(lexicon: dict[str, list[str]], path: Path) -> None:
    with open(path, "w") as f:
        for w in sorted(lexicon):
            for pron in lexicon[w]:
                f.write(f"{w}\t{pron}\n")


def make_general_assets(
    corpus: Path,
    assets: Path,
    vocabulary_size: int = general.VOCABULARY_SIZE,
    domain_weight: float = 0.85,
    lm_sentences: int = 200000,
    seed: int = 5,
) -> dict[str, object]:
    """Write lexicon.txt and lm.arpa for general English plus the domain, from a synthesized corpus.

    Lexicon: `general.vocabulary` with pronunciations as the corpus's `gtrain` and `train` splits spoke
    them (the domain split, when present, gives its words the in-context variants of the domain's
    phrasing, e.g. "four" said like "for"), plus the isolated form.
    LM: the domain trigram (its generator's training sentences) interpolated with a general trigram
    (WordNet's examples, words outside the lexicon as <unk>) whose unigram floor follows wordfreq,
    so every lexicon word has a probability in line with how common it is. tokens.txt is kept.
    """
    from workers.asr.lab.lm import UNK, estimate, interpolate, write_arpa

    metas = [m for split in TRAINING_SPLITS for m in load_split(corpus, split)[1]]
    lexicon = complete_lexicon(metas, general.vocabulary(vocabulary_size), assets / "tokens.txt")
    write_lexicon(lexicon, assets / "lexicon.txt")
    words = sorted(lexicon)
    prior = {w: general.word_frequency(w) for w in words}
    stream = domain.sentences(seed, held_out=False)
    domain_lm = estimate((next(stream) for _ in range(lm_sentences)), words, unigram_prior=prior)
    examples = [" ".join(w if w in lexicon else UNK for w in s.split()) for s in general.wordnet_sentences()]
    general_lm = estimate(examples, words, min_count=1, unigram_prior=prior)
    counts = write_arpa(interpolate(domain_lm, general_lm, domain_weight), assets / "lm.arpa")
    return {
        "words": len(lexicon),
        "pronunciations": sum(len(p) for p in lexicon.values()),
        "domain_weight": domain_weight,
        "general_sentences": len(examples),
        "ngrams": counts,
    }
