"""The latency accounting: one hop's timestamps split into components that add up to e2e.

Per hop (MISSION.md, "Latency accounting"):

- ``hop_buffer`` = ready − first_capture
- ``net``        = hop_published − ready
- ``queue_wait`` = (worker_received − hop_published) + (infer_start − batch_closed)
- ``batch_wait`` = batch_closed − worker_received
- ``gpu_infer``  = infer_end − infer_start
- ``post``       = transcript_published − infer_end
- ``e2e``        = transcript_published − first_capture

Whose clock: ``ready`` is the windower's receive time of the frame that completed the hop, so
``net`` and everything after it are measured on clocks the pipeline owns. ``hop_buffer`` is the
only component spanning two clocks: from the producer's capture of the hop's first frame to the
windower receiving the last one (~160 ms + producer -> windower transport + the producer's clock
offset). The windower sanity-checks the capture time (NaN, too far ahead or behind its receive
time -> replaced by "received − one frame", counted) and never lets it be later than ``ready``.
The degradation controller does not use it at all: its e2e is one hop period plus ``net`` ...
``post`` (:mod:`pipeline.control.policy`). An idle-expired final hop is ready at the expiry
check, so its ``hop_buffer`` includes the idle wait.

The intermediate timestamps cancel, so the components add up to ``e2e``. It is exact in
floating point too: epoch-ms timestamps of one run lie within a factor of two of each other,
so every difference is exact (Sterbenz) and the differences sit on one grid whose sums are
exact. Components are never clamped: a negative one means the hosts' clocks disagree, and
hiding that would break the sum.

A hop whose result was not emitted (partials throttled, or a duplicate/stale hypothesis)
is still accounted: the assembler passes the moment it finished with the hop instead of a
publish time, so ``post`` is inference end -> stitching done and ``e2e`` is how long the
pipeline took to have that hop's result ready; its event carries ``emitted=false``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipeline import contracts

#: Component names in accounting order, as they appear in LatencyEvent (``<name>_ms``).
COMPONENTS = ("hop_buffer", "net", "queue_wait", "batch_wait", "gpu_infer", "post")

#: What the controller and the report track per hop: the components, then their sum ``e2e``.
MEASURES = (*COMPONENTS, "e2e")

#: Every figure of a LatencyEvent in ms: the components, then their sum.
FIGURES = tuple(f"{name}_ms" for name in MEASURES)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between ranks (numpy's default); NaN if empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def components(hypothesis: contracts.Hypothesis, transcript_published_ts_ms: float) -> dict[str, float]:
    """The hop's latency breakdown in ms: ``hop_buffer_ms`` ... ``post_ms`` and ``e2e_ms``."""
    first_capture = float(hypothesis.first_capture_ts_ms)
    ready = float(hypothesis.ready_ts_ms)
    hop_published = float(hypothesis.hop_published_ts_ms)
    received = float(hypothesis.received_ts_ms)
    batch_closed = float(hypothesis.batch_closed_ts_ms)
    infer_start = float(hypothesis.infer_start_ts_ms)
    infer_end = float(hypothesis.infer_end_ts_ms)
    published = float(transcript_published_ts_ms)
    return {
        "hop_buffer_ms": ready - first_capture,
        "net_ms": hop_published - ready,
        "queue_wait_ms": (received - hop_published) + (infer_start - batch_closed),
        "batch_wait_ms": batch_closed - received,
        "gpu_infer_ms": infer_end - infer_start,
        "post_ms": published - infer_end,
        "e2e_ms": published - first_capture,
    }


def latency_event(
    hypothesis: contracts.Hypothesis, transcript_published_ts_ms: float, emitted: bool
) -> contracts.LatencyEvent:
    """The LatencyEvent record for one hypothesis (see :func:`components` for the figures)."""
    return contracts.LatencyEvent(
        session_id=hypothesis.session_id,
        hop_seq=hypothesis.hop_seq,
        worker_id=hypothesis.worker_id,
        event_ts_ms=float(transcript_published_ts_ms),
        **components(hypothesis, transcript_published_ts_ms),
        batch_size=hypothesis.batch_size,
        beam=hypothesis.beam,
        window_secs=hypothesis.window_secs,
        control_level=hypothesis.control_level,
        emitted=emitted,
        skipped_before=hypothesis.skipped_before,
    )


def measures(event: contracts.LatencyEvent) -> dict[str, float]:
    """The event's figures in ms by measure name, in :data:`MEASURES` order (``hop_buffer`` ... ``e2e``)."""
    return {name: getattr(event, figure) for name, figure in zip(MEASURES, FIGURES, strict=True)}
