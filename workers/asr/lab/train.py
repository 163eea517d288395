"""Training: CTC on phoneme targets with on-device augmentation, for a wall-clock budget, resumable.

The whole corpus is resampled to 16 kHz and kept on the training device; batches are gathered there,
so a GPU is never starved by a data loader. Every step also mixes in the conditions the service
meets: telephone-band (8 kHz mu-law) audio, background noise, level changes, leading silence, and
batches of short 0.5-1.6 s crops like the worker's rolling windows (targets = phonemes whose
midpoint lies in the crop).

    python -m workers.asr.train --corpus data/corpus --minutes 60 --run-dir runs/asr
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from workers.asr import checkpoint
from workers.asr.audio import SAMPLE_RATE, resample, telephone
from workers.asr.lab.synth import load_split
from workers.asr.model import AcousticModel, ModelConfig, count_parameters, output_lengths


@dataclass
class Corpus:
    """A split held on one device: flat 16 kHz audio plus per-clip offsets, targets and phone spans."""

    audio: torch.Tensor  # float16 [total samples]
    offsets: np.ndarray
    lengths: np.ndarray
    targets: list[np.ndarray]  # token ids
    spans: list[np.ndarray]  # [n_phones, 2] start/end sample of each target, relative to the clip


def load_corpus(root: Path, split: str, tokens: list[str], device: torch.device) -> Corpus:
    audios, metas = load_split(root, split)
    if not audios:
        raise FileNotFoundError(f"no {split} shards under {root}")
    rate = int(metas[0]["rate_hz"])
    index = {t: i for i, t in enumerate(tokens)}
    flat = torch.from_numpy(np.concatenate(audios)).to(device).float() / 32768
    in_off = np.cumsum([0] + [len(a) for a in audios])
    out = torch.empty(math.ceil(len(flat) * SAMPLE_RATE / rate), dtype=torch.float16, device=device)
    chunk = 2_000_000 * rate // SAMPLE_RATE  # resample in slices; clips start and end in silence
    for s in range(0, len(flat), chunk):
        piece = resample(flat[s : s + chunk], rate, SAMPLE_RATE)
        o = math.ceil(s * SAMPLE_RATE / rate)
        out[o : o + len(piece)] = piece[: len(out) - o].half()
    offsets = np.ceil(in_off * SAMPLE_RATE / rate).astype(np.int64)
    targets, spans = [], []
    for m in metas:
        keep = [(index[p], s, e) for p, s, e in m["phones"] if p in index]
        targets.append(np.array([k[0] for k in keep], dtype=np.int64))
        spans.append(np.array([[k[1] * SAMPLE_RATE, k[2] * SAMPLE_RATE] for k in keep], dtype=np.int64).reshape(-1, 2))
    return Corpus(out, offsets[:-1], np.diff(offsets), targets, spans)


def _batches(corpus: Corpus, seconds: float, rng: random.Random) -> list[list[int]]:
    """Length-sorted batches whose padded size stays under `seconds` of audio, in random order."""
    order = np.argsort(corpus.lengths + np.array([rng.randint(0, 8000) for _ in corpus.lengths]))
    batches: list[list[int]] = []
    cur: list[int] = []
    longest = 0
    for i in order:
        longest_new = max(longest, int(corpus.lengths[i]))
        if cur and longest_new * (len(cur) + 1) > seconds * SAMPLE_RATE:
            batches.append(cur)
            cur, longest_new = [], int(corpus.lengths[i])
        cur.append(int(i))
        longest = longest_new
    if cur:
        batches.append(cur)
    rng.shuffle(batches)
    return batches


def _gather(
    corpus: Corpus, starts: np.ndarray, lengths: np.ndarray, shift: np.ndarray, device: torch.device
) -> torch.Tensor:
    """[B, longest] float32 audio: slices of the flat corpus, each delayed by `shift` samples of silence."""
    total = lengths + shift
    width = int(total.max())
    pos = torch.arange(width, device=device)[None, :] - torch.as_tensor(shift, device=device)[:, None]
    ok = (pos >= 0) & (pos < torch.as_tensor(lengths, device=device)[:, None])
    idx = (torch.as_tensor(starts, device=device)[:, None] + pos.clamp(min=0)).clamp(max=len(corpus.audio) - 1)
    return corpus.audio[idx].float() * ok


def make_batch(
    corpus: Corpus, items: list[int], crop: bool, rng: random.Random, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Audio, sample lengths, concatenated targets and target lengths for a list of clips."""
    starts, lengths, shifts, targets = [], [], [], []
    for i in items:
        off, n = int(corpus.offsets[i]), int(corpus.lengths[i])
        tgt, span = corpus.targets[i], corpus.spans[i]
        if crop:
            size = min(n, int(rng.uniform(0.5, 1.6) * SAMPLE_RATE))
            s = rng.randint(0, n - size)
            mid = span.mean(axis=1) if len(span) else np.zeros(0)
            tgt = tgt[(mid >= s) & (mid < s + size)]
            off, n = off + s, size
        starts.append(off)
        lengths.append(n)
        shifts.append(0 if crop or rng.random() < 0.5 else rng.randint(0, int(0.4 * SAMPLE_RATE)))
        targets.append(tgt)
    st, ln, sh = np.array(starts), np.array(lengths), np.array(shifts)
    audio = _gather(corpus, st, ln, sh, device)
    n_samples = torch.as_tensor(ln + sh, device=device)
    tgt_cat = torch.as_tensor(np.concatenate(targets) if targets else np.zeros(0, np.int64), device=device)
    tgt_len = torch.as_tensor([len(t) for t in targets], device=device)
    return audio, n_samples, tgt_cat, tgt_len


def augment(audio: torch.Tensor, n_samples: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Level, noise and telephone-band changes, per clip, on the batch's device."""
    b, t = audio.shape
    dev = audio.device
    valid = (torch.arange(t, device=dev)[None] < n_samples[:, None]).float()
    peak = audio.abs().amax(-1, keepdim=True).clamp(min=1e-4)
    target = torch.empty(b, 1, device=dev).uniform_(0.05, 0.95, generator=gen)
    x = audio / peak * target
    rms = x.square().sum(-1, keepdim=True).div(n_samples[:, None].clamp(min=1)).sqrt()
    snr_db = torch.empty(b, 1, device=dev).uniform_(5, 40, generator=gen)
    white = torch.randn(b, t, device=dev, generator=gen)
    brown = torch.cumsum(torch.randn(b, t, device=dev, generator=gen), -1)
    brown = brown - F.avg_pool1d(brown[:, None], 401, 1, 200, count_include_pad=False)[:, 0]
    brown = brown / brown.std(-1, keepdim=True).clamp(min=1e-6)
    mix = torch.rand(b, 1, device=dev, generator=gen)
    noise = (mix * white + (1 - mix) * brown) * rms * 10 ** (-snr_db / 20)
    use_noise = (torch.rand(b, 1, device=dev, generator=gen) < 0.6).float()
    x = (x + use_noise * noise) * valid
    phone = torch.rand(b, device=dev, generator=gen) < 0.3
    if phone.any():
        x[phone] = telephone(x[phone]) * valid[phone]
    return x.clamp(-1, 1)


def spec_augment(feats: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Two frequency masks (<= 12 bins) and two time masks (<= 25 frames) per clip."""
    b, t, f = feats.shape
    dev = feats.device
    out = feats.clone()
    bins = torch.arange(f, device=dev)[None]
    frames = torch.arange(t, device=dev)[None]
    for _ in range(2):
        w = torch.randint(0, 13, (b, 1), device=dev, generator=gen)
        s = (torch.rand(b, 1, device=dev, generator=gen) * (f - w)).long()
        out = out.masked_fill(((bins >= s) & (bins < s + w))[:, None, :], 0.0)
        w = torch.randint(0, min(26, max(t // 5, 1)), (b, 1), device=dev, generator=gen)
        s = (torch.rand(b, 1, device=dev, generator=gen) * (t - w)).long()
        out = out.masked_fill(((frames >= s) & (frames < s + w))[:, :, None], 0.0)
    return out


class _SpecAugment(torch.nn.Module):
    def __init__(self, gen: torch.Generator) -> None:
        super().__init__()
        self.gen = gen

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return spec_augment(x, self.gen)


def feature_stats(model: AcousticModel, corpus: Corpus, device: torch.device) -> None:
    """Global mean/std of log-mel over a sample of clips (no per-window statistics: they would leak)."""
    rng = random.Random(0)
    items = rng.sample(range(len(corpus.lengths)), min(256, len(corpus.lengths)))
    audio, n, _, _ = make_batch(corpus, items, False, rng, device)
    feats = model.features(audio)
    from workers.asr.features import num_frames

    valid = torch.arange(feats.shape[1], device=device)[None] < num_frames(n)[:, None]
    sel = feats[valid]
    model.feat_mean.copy_(sel.mean(0))
    model.feat_std.copy_(sel.std(0).clamp(min=1e-3))


def lr_at(progress: float, step: int, peak: float, warmup: int) -> float:
    return peak * min(1.0, (step + 1) / warmup) * max(0.02, 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def train(args: argparse.Namespace) -> dict:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokens = (checkpoint.ASSETS / "tokens.txt").read_text().split()
    t0 = time.time()
    corpus = load_corpus(args.corpus, args.split, tokens, device)
    hours = corpus.lengths.sum() / SAMPLE_RATE / 3600
    print(f"loaded {len(corpus.lengths)} clips ({hours:.1f} h) in {time.time() - t0:.0f} s", flush=True)

    info: dict = {}
    if args.init is not None:
        # Fine-tuning: architecture, weights and feature statistics all come from the checkpoint.
        model, init_tokens, info = checkpoint.load(args.init)
        if init_tokens != tokens:
            raise ValueError(f"{args.init}: its tokens differ from {checkpoint.ASSETS / 'tokens.txt'}")
        model = model.to(device)
        info = {"fine_tuned_from": info}
    else:
        model = AcousticModel(ModelConfig(n_tokens=len(tokens), d_model=args.d_model, n_layers=args.layers))
        model = model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)
    state_path = args.run_dir / "state.pt"
    step, elapsed = 0, 0.0
    if args.resume and state_path.exists():
        state = torch.load(state_path, map_location=device, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        print(f"resumed at step {step} ({elapsed / 60:.1f} min trained)", flush=True)
    elif args.init is None:
        feature_stats(model, corpus, device)
    print(f"model: {count_parameters(model) / 1e6:.2f} M parameters on {device}", flush=True)

    rng = random.Random(args.seed + step)
    gen = torch.Generator(device=device).manual_seed(args.seed + step)
    specaug = _SpecAugment(gen)
    budget = args.minutes * 60
    start = time.time() - elapsed
    last_save = time.time()
    info.update(
        corpus_clips=len(corpus.lengths),
        corpus_hours=round(float(hours), 2),
        parameters=count_parameters(model),
        device=str(device),
    )
    use_amp = device.type == "cuda"
    losses: list[float] = []
    pending: list[torch.Tensor] = []  # losses still on the device: one sync per log line, not per step
    crop_every = max(1, round(1 / max(args.crop_share, 1e-6)))
    try:
        from tqdm import tqdm

        bar = tqdm(total=int(budget), initial=int(elapsed), unit="s", disable=not sys.stderr.isatty())
    except ImportError:  # the training machine may lack tqdm; the log lines are enough there
        bar = None
    done = False
    while not done:
        for items in _batches(corpus, args.batch_seconds, rng):
            crop = step % crop_every == crop_every - 1
            if crop:
                items = rng.sample(range(len(corpus.lengths)), min(len(corpus.lengths), int(args.batch_seconds / 1.6)))
            model.train()
            audio, n, tgt, tgt_len = make_batch(corpus, items, crop, rng, device)
            with torch.no_grad():
                audio = augment(audio, n, gen)
                feats = model.features(audio)
            lengths = output_lengths(n)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                log_probs = model.encode_features(feats, lengths, specaug)
            loss = F.ctc_loss(
                log_probs.float().transpose(0, 1), tgt, lengths, tgt_len, blank=0, reduction="mean", zero_infinity=True
            )
            progress = (time.time() - start) / budget
            for g in opt.param_groups:
                g["lr"] = lr_at(progress, step, args.lr, args.warmup)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            step += 1
            pending.append(loss.detach())
            progress = (time.time() - start) / budget
            done = progress >= 1.0
            if done or step % 10 == 0 or step % args.log_every == 0:
                losses += torch.stack(pending).float().cpu().tolist()
                pending.clear()
                if bar is not None:
                    bar.n = min(int(time.time() - start), int(budget))
                    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", step=step)
            if step % args.log_every == 0:
                print(
                    f"step {step} {time.time() - start:.0f}s loss {np.mean(losses[-args.log_every :]):.4f} "
                    f"lr {opt.param_groups[0]['lr']:.2e}",
                    flush=True,
                )
            if done or time.time() - last_save > args.save_every * 60:
                info.update(
                    steps=step,
                    train_minutes=round((time.time() - start) / 60, 1),
                    final_loss=round(float(np.mean(losses[-50:])), 4),
                )
                _save(args, model, opt, tokens, info, step, time.time() - start)
                last_save = time.time()
            if done:
                break
    if bar is not None:
        bar.close()
    return info


def _save(
    args: argparse.Namespace,
    model: AcousticModel,
    opt: torch.optim.Optimizer,
    tokens: list[str],
    info: dict,
    step: int,
    elapsed: float,
) -> None:
    """The resumable state (run dir) and the fp16 inference checkpoint (export path)."""
    args.run_dir.mkdir(parents=True, exist_ok=True)
    torch.save(
        {"model": model.state_dict(), "opt": opt.state_dict(), "step": step, "elapsed": elapsed},
        args.run_dir / "state.tmp",
    )
    (args.run_dir / "state.tmp").replace(args.run_dir / "state.pt")
    checkpoint.save(args.export, model.eval(), tokens, info)
    print(f"saved {args.export} at step {step}", flush=True)
