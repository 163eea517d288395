"""The degradation ladder: what each level sets, and the control command that puts it in force.

Pure: no Kafka. The controller builds commands with :func:`command_record`; every follower turns
them back into :class:`Knobs` with :func:`knobs_from_command`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.settings import Settings

GLOBAL_SCOPE = "global"


@dataclass(frozen=True)
class Knobs:
    """What one degradation level sets; quality only ever goes down as the level goes up."""

    level: int
    emit_interval_ms: int
    window_secs: float
    beam: int
    admit_new_sessions: bool


def ladder(settings: Settings) -> tuple[Knobs, ...]:
    """The mission's order: throttle partials, shrink the window, cut the beam, refuse sessions."""
    full = Knobs(
        level=0,
        emit_interval_ms=settings.assembler.emit_interval_ms,
        window_secs=settings.audio.window_secs,
        beam=settings.worker.beam,
        admit_new_sessions=True,
    )
    throttled = replace(full, level=1, emit_interval_ms=settings.assembler.throttled_emit_interval_ms)
    short_window = replace(throttled, level=2, window_secs=settings.audio.min_window_secs)
    beam2 = replace(short_window, level=3, beam=min(2, full.beam))
    greedy = replace(beam2, level=4, beam=1)
    closed = replace(greedy, level=5, admit_new_sessions=False)
    return (full, throttled, short_window, beam2, greedy, closed)


def command_record(
    seq: int, knobs: Knobs, reason: str, metrics: dict[str, float], scope: str
) -> contracts.ControlCommand:
    """The ControlCommand putting ``knobs`` in force, with the reason and the values behind it."""
    return contracts.ControlCommand(
        scope=scope, seq=seq, **asdict(knobs), reason=reason, metrics=metrics, issued_ts_ms=now_ms()
    )


def knobs_from_command(command: contracts.ControlCommand) -> Knobs:
    return Knobs(
        level=command.level,
        emit_interval_ms=command.emit_interval_ms,
        window_secs=round(command.window_secs, 6),
        beam=command.beam,
        admit_new_sessions=command.admit_new_sessions,
    )
