"""``hopline bench worker``: real-time hops through a real worker process, per-component figures.

One embedded broker and one worker process serve the whole sweep. For each session count
the bench feeds 160 ms hops of real speech (1.28 s rolling windows, shorter at session
start) on the real-time schedule, sessions starting at random phases within the first
second, then waits for every hop to come back as a hypothesis (or as a counted skip) and
computes batch_wait, queue_wait and gpu_infer from the timestamps the hypotheses carry.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline import contracts
from pipeline.audio import read_wav_native
from pipeline.clock import now_ms
from pipeline.demo import SAMPLES_DIR
from pipeline.errors import CliError
from pipeline.kafka.broker import EmbeddedBroker
from pipeline.kafka.clients import make_producer
from pipeline.kafka.readers import open_reader
from pipeline.kafka.topics import fresh_topics
from pipeline.observe.latency import COMPONENTS, percentile
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess

log = logging.getLogger(__name__)

WORKER_READY_TIMEOUT_S = 180.0
DRAIN_TIMEOUT_S = 60.0
ESPEAK_SENTENCES = (
    "hi I would like to order two large pepperoni pizzas and a diet coke please",
    "my laptop will not connect to the office network since this morning",
    "can you tell me the status of my order number four five seven two",
    "I need to change the delivery address to twelve main street",
    "the printer on the third floor keeps jamming every time we print",
    "could I get a cheeseburger with no onions and a small fries",
    "I was charged twice for the same item on my last invoice",
    "please reset my password I am locked out of my account",
)
#: The components a worker sees on its own (the rest need the windower and the assembler).
WORKER_COMPONENTS = tuple(c for c in COMPONENTS if c in ("queue_wait", "batch_wait", "gpu_infer"))


def _resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear resampling: good enough to feed speech-like audio at the model rate for timing."""
    if rate == target:
        return audio
    positions = np.arange(int(len(audio) * target / rate)) * (rate / target)
    return np.interp(positions, np.arange(len(audio)), audio).astype(np.float32)


def _read_wav(path: Path, target_rate: int) -> np.ndarray:
    try:
        pcm, rate = read_wav_native(path)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return _resample(pcm.astype(np.float32) / 32768.0, rate, target_rate)


def _espeak_clips(target_rate: int) -> list[np.ndarray]:
    if shutil.which("espeak-ng") is None:
        raise CliError("no samples/*.wav and no espeak-ng to make speech: install espeak-ng (make setup)")
    clips = []
    with tempfile.TemporaryDirectory(prefix="hopline-bench-") as tmp:
        for index, sentence in enumerate(ESPEAK_SENTENCES):
            path = Path(tmp) / f"{index}.wav"
            voice = ("en-us", "en-gb", "en-us+f3", "en-us+m3")[index % 4]
            subprocess.run(
                ["espeak-ng", "-v", voice, "-s", "165", "-w", str(path), sentence], check=True, capture_output=True
            )
            clips.append(_read_wav(path, target_rate))
    return clips


def speech_stream(target_rate: int) -> tuple[np.ndarray, str]:
    """All available speech back to back with short pauses, and where it came from."""
    paths = sorted(SAMPLES_DIR.glob("*.wav"))
    if paths:
        clips, source = [_read_wav(p, target_rate) for p in paths[:40]], f"{min(len(paths), 40)} samples/*.wav"
    else:
        clips, source = _espeak_clips(target_rate), f"{len(ESPEAK_SENTENCES)} espeak-ng sentences"
    pause = np.zeros(int(0.3 * target_rate), dtype=np.float32)
    return np.concatenate([part for clip in clips for part in (clip, pause)]), source


def _pcm16(audio: np.ndarray) -> bytes:
    return bytes(np.clip(np.round(audio * 32767), -32768, 32767).astype("<i2").tobytes())


class HypothesisReader:
    """Collects every hypothesis from the start of the topic on a background thread (assign: no group join)."""

    def __init__(self, settings: Settings) -> None:
        self._consumer = open_reader(settings, "bench-reader", [settings.topics.hypotheses])
        self._lock = threading.Lock()
        self._records: list[contracts.Hypothesis] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hypothesis-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._consumer.poll(0.1)
            if message is None or message.error() is not None:
                continue
            record = contracts.Hypothesis.decode(message.value())
            with self._lock:
                self._records.append(record)

    def for_sessions(self, prefix: str) -> list[contracts.Hypothesis]:
        with self._lock:
            return [r for r in self._records if r.session_id.startswith(prefix)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self._consumer.close()


def feed_sessions(
    settings: Settings, stream: np.ndarray, prefix: str, sessions: int, duration_s: float, seed: int
) -> int:
    """Publish every session's hops on the real-time schedule; returns how many were sent."""
    audio = settings.audio
    hop_samples = audio.sample_rate * audio.hop_ms // 1000
    window_samples = int(audio.window_secs * audio.sample_rate)
    hops_per_session = max(1, int(duration_s * 1000 // audio.hop_ms))
    rng = random.Random(seed)
    starts = [rng.uniform(0.0, 1.0) for _ in range(sessions)]
    offsets = [rng.randrange(0, max(1, len(stream) - hop_samples)) for _ in range(sessions)]
    looped = np.concatenate([stream, stream])
    schedule = sorted(
        (start + (k + 1) * audio.hop_ms / 1000.0, index, k)
        for index, start in enumerate(starts)
        for k in range(hops_per_session)
    )
    producer = make_producer(settings)
    t0 = time.time() + 0.5
    for due, index, k in schedule:
        delay = t0 + due - time.time()
        if delay > 0:
            time.sleep(delay)
        end = (k + 1) * hop_samples
        begin = max(0, end - window_samples)
        source_end = (offsets[index] + end) % len(stream)
        window = looped[source_end + len(stream) - (end - begin) : source_end + len(stream)]
        ready_ms = (t0 + due) * 1000.0
        session_id = f"{prefix}{index:03d}"
        hop = contracts.Hop(
            session_id=session_id,
            hop_seq=k,
            first_capture_ts_ms=ready_ms - audio.hop_ms,
            ready_ts_ms=ready_ms,
            published_ts_ms=now_ms(),
            sample_rate=audio.sample_rate,
            audio=_pcm16(window),
            window_start_sample=begin,
            window_secs=round((end - begin) / audio.sample_rate, 6),
            gap_frames=0,
            duplicate_frames=0,
            is_final=k == hops_per_session - 1,
            control_level=0,
        )
        producer.produce(settings.topics.hops, key=session_id, value=hop.encode())
        producer.poll(0)
    producer.flush(10.0)
    return len(schedule)


def _percentiles(values: Sequence[float]) -> tuple[float, float]:
    return (round(percentile(values, 50), 2), round(percentile(values, 95), 2))


def summarize(sessions: int, hops_sent: int, hypotheses: Sequence[contracts.Hypothesis]) -> dict[str, Any]:
    """Per-component p50/p95 (ms) and the batch-size distribution over distinct batches."""
    components = {
        "batch_wait": [h.batch_closed_ts_ms - h.received_ts_ms for h in hypotheses],
        "queue_wait": [
            (h.received_ts_ms - h.hop_published_ts_ms) + (h.infer_start_ts_ms - h.batch_closed_ts_ms)
            for h in hypotheses
        ],
        "gpu_infer": [h.infer_end_ts_ms - h.infer_start_ts_ms for h in hypotheses],
        "queue_wait_kafka": [h.received_ts_ms - h.hop_published_ts_ms for h in hypotheses],
        "queue_wait_gpu": [h.infer_start_ts_ms - h.batch_closed_ts_ms for h in hypotheses],
    }
    batches = {(h.worker_id, h.infer_start_ts_ms): h.batch_size for h in hypotheses}
    sizes = Counter(batches.values())
    summary: dict[str, Any] = {"sessions": sessions, "hops_sent": hops_sent, "hypotheses": len(hypotheses)}
    summary["skipped_hops"] = sum(h.skipped_before for h in hypotheses)
    for name, values in components.items():
        summary[f"{name}_ms_p50"], summary[f"{name}_ms_p95"] = _percentiles(values)
    summary["batch_size_mean"] = round(sum(s * n for s, n in sizes.items()) / max(1, len(batches)), 3)
    summary["batch_size_distribution"] = {str(size): sizes[size] for size in sorted(sizes)}
    return summary


def _wait_for_all(reader: HypothesisReader, prefix: str, hops_sent: int) -> list[contracts.Hypothesis]:
    """Every hop comes back either as a hypothesis or inside one's ``skipped_before`` or ``strided_before``."""
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while True:
        records = reader.for_sessions(prefix)
        accounted = len(records) + sum(r.skipped_before + r.strided_before for r in records)
        if accounted >= hops_sent or time.monotonic() > deadline:
            if accounted < hops_sent:
                log.warning(
                    "%d of %d hops unaccounted for after %.0f s", hops_sent - accounted, hops_sent, DRAIN_TIMEOUT_S
                )
            return records
        time.sleep(0.2)


def run_bench(
    settings: Settings,
    sessions: int,
    duration_s: float,
    sweep: Sequence[int],
    queue_wait_limit_ms: float = 50.0,
    progress: bool = True,
) -> dict[str, Any]:
    """Run the headline session count and the sweep; returns the headline figures plus the curve."""
    stream, source = speech_stream(settings.audio.sample_rate)
    load_before = os.getloadavg()[0]
    counts = sorted(set(sweep) | {sessions})
    with EmbeddedBroker() as broker:
        settings = fresh_topics(settings, broker.bootstrap_servers, metrics={"enabled": False})
        reader = HypothesisReader(settings)
        worker = ServiceProcess(settings, "worker")
        try:
            worker.wait_ready(WORKER_READY_TIMEOUT_S)
            curve: list[dict[str, Any]] = []
            if progress:
                print(CURVE_HEADER, file=sys.stderr, flush=True)
            for count in counts:
                prefix = f"n{count}-"
                sent = feed_sessions(settings, stream, prefix, count, duration_s, seed=count)
                point = summarize(count, sent, _wait_for_all(reader, prefix, sent))
                curve.append(point)
                if progress:
                    print(_curve_row(point), file=sys.stderr, flush=True)
                if point["queue_wait_ms_p95"] >= queue_wait_limit_ms and count >= sessions:
                    break
        finally:
            exit_code = worker.terminate()
            reader.close()
    if exit_code != 0:
        raise CliError(f"worker exited with {exit_code} after the bench:\n{worker.output[-2000:]}")
    headline = next(p for p in curve if p["sessions"] == sessions)
    capacity = 0
    for point in curve:
        if point["queue_wait_ms_p95"] >= queue_wait_limit_ms:
            break
        capacity = point["sessions"]
    return {
        **headline,
        "capacity_sessions": capacity if sweep else None,
        "capacity_bounded": any(p["queue_wait_ms_p95"] >= queue_wait_limit_ms for p in curve),
        "queue_wait_limit_ms": queue_wait_limit_ms,
        "duration_s": duration_s,
        "max_latency_ms": settings.worker.max_latency_ms,
        "max_batch_size": settings.worker.max_batch_size,
        "coalesce_stale_hops": settings.worker.coalesce_stale_hops,
        "fault_slowdown": settings.worker.fault_slowdown,
        "audio": source,
        "device": settings.worker.device,
        "torch_threads": settings.worker.torch_threads,
        "cpus": os.cpu_count(),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "curve": curve,
    }


def _curve_row(point: dict[str, Any]) -> str:
    cells = [f"{point['sessions']:>8}"]
    cells += [f"{point[f'{c}_ms_p50']:>8.1f} {point[f'{c}_ms_p95']:>8.1f}" for c in WORKER_COMPONENTS]
    cells += [f"{point['batch_size_mean']:>6.2f}", f"{point['skipped_hops']:>7}", f"{point['hypotheses']:>6}"]
    return " ".join(cells)


CURVE_HEADER = (
    "sessions  batch_wait p50/p95  queue_wait p50/p95  gpu_infer p50/p95  batch  skipped   hyps\n"
    "          (ms)                (ms)                (ms)               mean"
)


def format_report(result: dict[str, Any]) -> str:
    lines = [
        f"worker bench: {result['sessions']} sessions x {result['duration_s']:.0f} s of {result['audio']}; "
        f"max_latency {result['max_latency_ms']:.0f} ms, max_batch {result['max_batch_size']}, "
        f"coalesce {result['coalesce_stale_hops']}, fault_slowdown {result['fault_slowdown']}",
        "",
        f"{'component':<12}{'p50 ms':>10}{'p95 ms':>10}",
    ]
    for component in WORKER_COMPONENTS:
        p50, p95 = result[f"{component}_ms_p50"], result[f"{component}_ms_p95"]
        lines.append(f"{component:<12}{p50:>10.1f}{p95:>10.1f}")
    distribution = ", ".join(f"{size}: {n}" for size, n in result["batch_size_distribution"].items())
    lines.append(
        f"  (queue_wait in Kafka {result['queue_wait_kafka_ms_p50']:.1f} / {result['queue_wait_kafka_ms_p95']:.1f}, "
        f"closed batch waiting for the GPU {result['queue_wait_gpu_ms_p50']:.1f} / "
        f"{result['queue_wait_gpu_ms_p95']:.1f})"
    )
    lines += [
        f"batch sizes (batches): {distribution}; mean {result['batch_size_mean']:.2f}",
        f"hops {result['hops_sent']}, hypotheses {result['hypotheses']}, skipped {result['skipped_hops']}",
        "",
        "capacity curve:",
        CURVE_HEADER,
        *(_curve_row(point) for point in result["curve"]),
        "",
        f"capacity_sessions (queue_wait p95 < {result['queue_wait_limit_ms']:.0f} ms): {result['capacity_sessions']}"
        + ("" if result["capacity_bounded"] else " (at least: no session count tried went over the limit)"),
    ]
    return "\n".join(lines)


def write_capacity_doc(path: Path, result: dict[str, Any], command: str | None = None) -> None:
    """The capacity curve as markdown, with the command line that produced it."""
    if command is None:
        env = [f"{key}={value}" for key, value in sorted(os.environ.items()) if key.startswith("HOPLINE_")]
        command = " ".join([*env, "hopline", *sys.argv[1:]])
    rows = [
        "| sessions | batch_wait p50 | batch_wait p95 | queue_wait p50 | queue_wait p95 "
        "| (in Kafka p95) | (for the GPU p95) | gpu_infer p50 | gpu_infer p95 | batch mean | skipped | hypotheses |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in result["curve"]:
        rows.append(
            f"| {p['sessions']} | {p['batch_wait_ms_p50']:.1f} | {p['batch_wait_ms_p95']:.1f} "
            f"| {p['queue_wait_ms_p50']:.1f} | {p['queue_wait_ms_p95']:.1f} "
            f"| {p['queue_wait_kafka_ms_p95']:.1f} | {p['queue_wait_gpu_ms_p95']:.1f} "
            f"| {p['gpu_infer_ms_p50']:.1f} | {p['gpu_infer_ms_p95']:.1f} "
            f"| {p['batch_size_mean']:.2f} | {p['skipped_hops']} | {p['hypotheses']} |"
        )
    text = [
        "# Worker capacity",
        "",
        "Produced by:",
        "",
        "```",
        command,
        "```",
        "",
        f"Audio: {result['audio']}. Per session count: {result['duration_s']:.0f} s of real-time 160 ms hops, "
        f"max_latency {result['max_latency_ms']:.0f} ms, max_batch {result['max_batch_size']}, "
        f"coalescing {'on' if result['coalesce_stale_hops'] else 'off'}, device {result['device']}, "
        f"torch threads {result['torch_threads'] or 'default'}. All figures in ms. Machine: {result['cpus']} CPUs, "
        f"1-minute load average {result['load_before']:.1f} before and {result['load_after']:.1f} after the run "
        "(the machine is shared: figures taken under load are noisy).",
        "",
        *rows,
        "",
        f"**capacity_sessions = {result['capacity_sessions']}** "
        f"(largest session count whose queue_wait p95 stays under {result['queue_wait_limit_ms']:.0f} ms"
        + ("" if result["capacity_bounded"] else "; a lower bound, no count tried went over")
        + ").",
        "",
        "Raw result:",
        "",
        "```json",
        json.dumps({k: v for k, v in result.items() if k != "curve"}, indent=2),
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))
