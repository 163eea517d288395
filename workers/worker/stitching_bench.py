"""``hopline bench stitching``: does stitching rolling-window hypotheses lose accuracy?

For each bundled sample, cuts the rolling windows the windower would (a hop every 160 ms,
1.28 s windows, shorter at the start, the last one short), runs the real recognizer on
every window, stitches the hypotheses as the assembler does, and compares the stitched
finals' WER with one decode of the whole utterance. It also reports, in audio time, how
long after a word ends it first shows in a partial (committed or tail; negative when a
word still being spoken already shows) and when it is committed; the pipeline's own
latency (e2e minus the hop buffer) comes on top of both.
No Kafka: this measures the stitching policy with the real model's word times.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pipeline import contracts
from pipeline.assembly.policy import Stitcher
from pipeline.assembly.service import stitching_policy
from pipeline.observe.wer import word_errors
from pipeline.settings import Settings
from workers.worker.service import stream_words

#: ``transcribe(windows, beam)`` -> recognitions with ``.text`` and ``.words`` (word, start_s, end_s, confidence).
Transcribe = Callable[[Sequence[np.ndarray], int], Sequence[Any]]


@dataclass
class UtteranceResult:
    name: str
    reference: str
    stitched: str
    whole: str
    hops: int
    finals: int
    shown_delay_ms: list[float] = field(default_factory=list)
    commit_delay_ms: list[float] = field(default_factory=list)


def rolling_windows(audio: np.ndarray, settings: Settings, window_secs: float) -> list[tuple[int, np.ndarray]]:
    """(first sample, window) per hop, as the windower cuts them; float32 in [-1, 1)."""
    rate = settings.audio.sample_rate
    hop = rate * settings.audio.hop_ms // 1000
    window = round(rate * window_secs)
    samples = _as_float(audio)
    windows = []
    for end in range(hop, len(samples) + hop, hop):
        end = min(end, len(samples))
        start = max(0, end - window)
        windows.append((start, samples[start:end]))
    return windows


def stitch_utterance(
    transcribe: Transcribe,
    audio: np.ndarray,
    reference: str,
    name: str,
    settings: Settings,
    beam: int = 4,
    batch: int = 8,
) -> UtteranceResult:
    rate = settings.audio.sample_rate
    windows = rolling_windows(audio, settings, settings.audio.window_secs)
    recognitions: list[Any] = []
    for first in range(0, len(windows), batch):
        recognitions.extend(transcribe([w for _, w in windows[first : first + batch]], beam))
    (whole,) = transcribe([_as_float(audio)], beam)

    clock_ms = [0.0]
    stitcher = Stitcher(stitching_policy(settings), clock=lambda: clock_ms[0])
    shown: dict[tuple[str, float], float] = {}
    committed_at: dict[tuple[str, float], float] = {}
    finals: list[contracts.Transcript] = []
    for seq, ((start, window), recognition) in enumerate(zip(windows, recognitions, strict=True)):
        start_ms = start * 1000.0 / rate
        end_ms = start_ms + len(window) * 1000.0 / rate
        words = stream_words(recognition, start_ms)
        hypothesis = _hypothesis(name, seq, words, (start_ms, end_ms), seq == len(windows) - 1, beam)
        outcome = stitcher.accept(hypothesis, settings.assembler.emit_interval_ms)
        clock_ms[0] += settings.audio.hop_ms
        state = stitcher.snapshot(name) or {"tail": []}
        for transcript in outcome.transcripts:
            visible = [_word_key(w.word, w.start_ms) for w in transcript.words]
            if transcript.kind == "partial":
                visible += [_word_key(w["word"], w["start_ms"]) for w in state["tail"]]
            for key in visible:
                shown.setdefault(key, end_ms)
            for word in transcript.words:
                committed_at.setdefault(_word_key(word.word, word.start_ms), end_ms)
            if transcript.kind == "final":
                finals.append(transcript)

    result = UtteranceResult(
        name=name,
        reference=reference,
        stitched=" ".join(f.text for f in finals if f.text),
        whole=whole.text,
        hops=len(windows),
        finals=sum(1 for f in finals if f.text),
    )
    for final in finals:
        for word in final.words:
            key = _word_key(word.word, word.start_ms)
            first_shown = min(
                (at for (text, start), at in shown.items() if text == key[0] and abs(start - key[1]) <= 200.0),
                default=committed_at[key],
            )
            result.shown_delay_ms.append(first_shown - word.end_ms)
            result.commit_delay_ms.append(committed_at[key] - word.end_ms)
    return result


def summarize(results: Sequence[UtteranceResult]) -> dict[str, Any]:
    def corpus_wer(pick: Callable[[UtteranceResult], str]) -> float:
        errors = words = 0
        for result in results:
            e, w = word_errors(result.reference, pick(result))
            errors, words = errors + e, words + w
        return errors / words if words else float("nan")

    shown = [d for r in results for d in r.shown_delay_ms]
    committed = [d for r in results for d in r.commit_delay_ms]
    return {
        "utterances": len(results),
        "hops": sum(r.hops for r in results),
        "wer_stitched": corpus_wer(lambda r: r.stitched),
        "wer_whole_utterance": corpus_wer(lambda r: r.whole),
        "shown_after_word_end_ms_p50": _percentile(shown, 0.5),
        "shown_after_word_end_ms_p95": _percentile(shown, 0.95),
        "committed_after_word_end_ms_p50": _percentile(committed, 0.5),
        "committed_after_word_end_ms_p95": _percentile(committed, 0.95),
    }


def run_bench(settings: Settings, samples: int, beam: int) -> tuple[dict[str, Any], list[UtteranceResult]]:
    from pipeline.demo.service import load_samples
    from workers.asr.backends import recognizer_from_settings

    recognizer = recognizer_from_settings(settings.worker)
    utterances = load_samples()[:samples]
    results = [stitch_utterance(recognizer.transcribe, u.audio, u.text, u.name, settings, beam) for u in utterances]
    return summarize(results), results


def format_report(summary: dict[str, Any], results: Sequence[UtteranceResult]) -> str:
    lines = [
        f"stitching bench: {summary['utterances']} samples, {summary['hops']} hops",
        f"WER stitched finals {100 * summary['wer_stitched']:.1f}%, "
        f"one decode of each whole utterance {100 * summary['wer_whole_utterance']:.1f}%",
        f"word first shown {summary['shown_after_word_end_ms_p50']:.0f} ms (p50) / "
        f"{summary['shown_after_word_end_ms_p95']:.0f} ms (p95) of audio after it ends; committed "
        f"{summary['committed_after_word_end_ms_p50']:.0f} / {summary['committed_after_word_end_ms_p95']:.0f} ms",
        "",
    ]
    for result in results:
        lines += [
            f"{result.name}:",
            f"  reference: {result.reference}",
            f"  stitched:  {result.stitched}",
            f"  whole:     {result.whole}",
        ]
    return "\n".join(lines)


def _hypothesis(
    session: str, seq: int, words: tuple[contracts.Word, ...], window_ms: tuple[float, float], final: bool, beam: int
) -> contracts.Hypothesis:
    """What stitching reads of a worker's hypothesis; the latency timestamps do not matter here."""
    start_ms, end_ms = window_ms
    return contracts.Hypothesis(
        session_id=session,
        hop_seq=seq,
        text=" ".join(w.word for w in words),
        words=words,
        confidence=0.0,
        window_start_ms=start_ms,
        window_end_ms=end_ms,
        is_final=final,
        beam=beam,
        window_secs=(end_ms - start_ms) / 1000.0,
        batch_size=1,
        worker_id="stitching-bench",
        first_capture_ts_ms=0.0,
        ready_ts_ms=0.0,
        hop_published_ts_ms=0.0,
        received_ts_ms=0.0,
        batch_closed_ts_ms=0.0,
        infer_start_ts_ms=0.0,
        infer_end_ts_ms=0.0,
    )


def _as_float(audio: np.ndarray) -> np.ndarray:
    return audio.astype(np.float32) / 32768.0 if audio.dtype == np.int16 else audio.astype(np.float32)


def _word_key(word: str, start_ms: float) -> tuple[str, float]:
    return (word.lower(), round(float(start_ms), 3))


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")
