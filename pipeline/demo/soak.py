"""``hopline soak``: a long run of the main job that reports what grows.

A soak is :func:`~pipeline.demo.service.run_demo` streaming for M minutes with two hooks: while
the sessions stream, a sampler reads each service's resident memory (``VmRSS`` of
``/proc/<pid>/status``, no psutil) after the warm-up, once a minute and at the end; once the
run's figures are read, and while the broker still holds its topics, the run's state
changelogs (``<prefix>-*-changelog``: the windower's ``sessions``/``audio`` tables, the
assembler's stitching table) are summed in bytes and the dead-letter topics counted. A leak
shows as RSS or changelog bytes that keep climbing minute after minute, or e2e p95 that does.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from pipeline.demo.service import DemoResult, RunOptions, _run_checked
from pipeline.errors import CliError
from pipeline.kafka.broker import embedded_broker_warning
from pipeline.kafka.clients import make_admin
from pipeline.kafka.readers import read_to_end
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess

#: The demo process itself (producer, transcript client, control follower) among the sampled services.
DEMO = "demo"
#: One RSS sample a minute; the end of the run is sampled as well.
SAMPLE_EVERY_S = 60.0

#: Per service, MB resident (None: the process was gone when sampled).
Rss = dict[str, float | None]


def rss_mb(status: str) -> float | None:
    """Resident memory in MB from the text of ``/proc/<pid>/status`` (its ``VmRSS: N kB`` line)."""
    for line in status.splitlines():
        name, _, value = line.partition(":")
        if name == "VmRSS":
            return round(int(value.split()[0]) / 1024.0, 1)
    return None


def read_rss_mb(pid: int, proc: Path = Path("/proc")) -> float | None:
    """A process's resident memory in MB; None once it has exited."""
    try:
        return rss_mb((proc / str(pid) / "status").read_text())
    except OSError:
        return None


def per_minute(samples: Sequence[tuple[float, Rss]], span_s: float = 60.0) -> dict[str, list[float | None]]:
    """Per service, the highest RSS sampled in each minute of the run (sample times in s from its start).

    A minute without a sample (or with the service gone) is None, so a list's index is its minute.
    """
    if not samples:
        return {}
    minutes = int(max(t for t, _ in samples) // span_s) + 1
    roles = list(dict.fromkeys(role for _, rss in samples for role in rss))
    buckets: dict[str, list[float | None]] = {role: [None] * minutes for role in roles}
    for t, rss in samples:
        for role, mb in rss.items():
            current = buckets[role][int(t // span_s)]
            if mb is not None and (current is None or mb > current):
                buckets[role][int(t // span_s)] = mb
    return buckets


def per_session_per_minute(total_bytes: int, sessions: int, streamed_s: float) -> float:
    """Changelog bytes written per session per minute of streaming."""
    if sessions < 1 or streamed_s <= 0:
        return 0.0
    return round(total_bytes / sessions / (streamed_s / 60.0), 1)


class RssSampler:
    """Samples each pid's RSS on entry (the start), every ``interval_s``, and on exit (the end)."""

    def __init__(
        self,
        pids: Mapping[str, int],
        interval_s: float = SAMPLE_EVERY_S,
        read: Callable[[int], float | None] = read_rss_mb,
    ) -> None:
        self._pids = dict(pids)
        self._interval_s = interval_s
        self._read = read
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-rss", daemon=True)
        self._started = 0.0
        #: (seconds since the start, RSS per service): the start and one a minute.
        self.samples: list[tuple[float, Rss]] = []
        self.end: Rss = {}

    def _sample(self) -> Rss:
        return {role: self._read(pid) for role, pid in self._pids.items()}

    def _run(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.samples.append((time.monotonic() - self._started, self._sample()))

    def __enter__(self) -> RssSampler:
        self._started = time.monotonic()
        self.samples.append((0.0, self._sample()))
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(5.0)
        self.end = self._sample()


@dataclass(frozen=True)
class TopicFigures:
    changelog_bytes: int
    #: Records per dead-letter topic, named without the run's prefix (``frames.dlq``).
    dlq_counts: dict[str, int]


def read_topic_figures(settings: Settings) -> TopicFigures:
    """Bytes (keys + values) on the run's changelog topics and the records on each of its dead-letter topics."""
    prefix = settings.topics.prefix
    names = make_admin(settings).list_topics(timeout=10).topics
    changelogs = {t for t in names if t.startswith(prefix) and t.endswith("-changelog")}
    dead_letters = {t for t in names if t.startswith(f"{prefix}.") and t.endswith(".dlq")}
    changelog_bytes = 0
    counts = dict.fromkeys(sorted(dead_letters), 0)
    for message in read_to_end(settings, "soak-topics", sorted(changelogs | dead_letters), timeout_s=120.0):
        topic = message.topic() or ""
        if topic in changelogs:
            changelog_bytes += len(message.key() or b"") + len(message.value() or b"")
        else:
            counts[topic] += 1
    return TopicFigures(changelog_bytes, {t.removeprefix(f"{prefix}."): n for t, n in counts.items()})


@dataclass
class SoakResult:
    sessions: int
    minutes: float
    demo: DemoResult
    rss_start: Rss
    rss_end: Rss
    rss_samples: list[tuple[float, Rss]]
    topics: TopicFigures

    @property
    def streamed_s(self) -> float:
        return self.demo.streamed_s

    def figures(self) -> dict[str, Any]:
        demo = self.demo.figures()
        return {
            "sessions": self.sessions,
            "minutes": self.minutes,
            "streamed_s": round(self.streamed_s, 1),
            "rss_mb_start": self.rss_start,
            "rss_mb_end": self.rss_end,
            "rss_mb_per_minute": per_minute(self.rss_samples),
            "changelog_bytes": self.topics.changelog_bytes,
            "changelog_bytes_per_session_per_minute": per_session_per_minute(
                self.topics.changelog_bytes, self.sessions, self.streamed_s
            ),
            "dlq_counts": self.topics.dlq_counts,
            "e2e_ms_p95_per_minute": demo["e2e_ms_p95_per_minute"],
            "wer": demo["wer"],
            "max_level": demo["max_level"],
        }


def run_soak(
    settings: Settings,
    sessions: int,
    minutes: float,
    external_broker: bool = False,
) -> SoakResult:
    """The main job for ``minutes`` of streaming, with RSS sampled throughout and the state topics read after."""
    samplers: list[RssSampler] = []
    topics: list[TopicFigures] = []

    def watch(services: Mapping[str, ServiceProcess]) -> RssSampler:
        pids = {role: service.process.pid for role, service in services.items()}
        samplers.append(RssSampler({**pids, DEMO: os.getpid()}))
        return samplers[-1]

    options = RunOptions(
        sessions=sessions,
        duration_s=minutes * 60.0,
        external_broker=external_broker,
        watch=watch,
        after_run=lambda run_settings: topics.append(read_topic_figures(run_settings)),
    )
    demo = _run_checked(settings, options)
    [sampler], [topic_figures] = samplers, topics
    return SoakResult(sessions, minutes, demo, sampler.samples[0][1], sampler.end, sampler.samples, topic_figures)


def format_soak(result: SoakResult) -> str:
    figures = result.figures()
    per_minute_rss = figures["rss_mb_per_minute"]
    minutes = max((len(v) for v in per_minute_rss.values()), default=0)
    header = f"{'RSS MB':<12}{'start':>8}" + "".join(f"{f'min {i}':>8}" for i in range(minutes)) + f"{'end':>8}"
    lines = [
        f"hopline soak: {result.sessions} sessions, {result.streamed_s / 60.0:.1f} min streamed, "
        f"WER {100 * figures['wer']:.1f}%, max level {figures['max_level']}",
        header,
    ]
    for role, start in figures["rss_mb_start"].items():
        cells = [start, *per_minute_rss.get(role, []), figures["rss_mb_end"].get(role)]
        lines.append(f"{role:<12}" + "".join(f"{_mb(v):>8}" for v in cells))
    lines.append(
        f"changelog: {figures['changelog_bytes_per_session_per_minute']:.0f} bytes per session per minute "
        f"({figures['changelog_bytes']} bytes in all)"
    )
    lines.append("dead letters: " + ", ".join(f"{t} {n}" for t, n in figures["dlq_counts"].items()))
    e2e = figures["e2e_ms_p95_per_minute"]
    lines.append("e2e p95 per minute: " + ", ".join("-" if v is None else f"{v:.0f} ms" for v in e2e))
    return "\n".join(lines)


def _mb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def run_soak_command(
    settings: Settings, sessions: int, minutes: float, as_json: bool, external_broker: bool = False
) -> int:
    if sessions < 1:
        raise CliError("--sessions must be at least 1")
    if minutes <= 0:
        raise CliError("--minutes must be positive")
    if not external_broker:
        warning = embedded_broker_warning(sessions, minutes * 60.0)
        if warning:
            print(f"hopline soak: warning: {warning}", file=sys.stderr)
    result = run_soak(settings, sessions, minutes, external_broker)
    print(json.dumps(result.figures()) if as_json else format_soak(result))
    return 0
