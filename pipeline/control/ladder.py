"""The degradation ladder: what each level sets, and the control command that puts it in force.

Pure: no Kafka. The controller builds commands with :func:`command_record`; every follower turns
them back into :class:`Knobs` with :func:`knobs_from_command`. Both check the command with
:func:`validate_command`: one bad command must not stop every session that follows it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.settings import Settings

GLOBAL_SCOPE = "global"

#: Beam widths the recognizer has a decoder for (``workers.asr.decoder.BEAMS``; pipeline never imports workers).
BEAMS = (1, 2, 4)


class InvalidCommand(ValueError):
    """A control command no service may put in force; the message is the one-line reason."""


@dataclass(frozen=True)
class Knobs:
    """What one degradation level sets; quality only ever goes down as the level goes up."""

    level: int
    emit_interval_ms: int
    window_secs: float
    beam: int
    admit_new_sessions: bool
    #: Model tier the workers run: ``full``, or ``int8`` (quantized, cheaper).
    tier: str = "full"


def ladder(settings: Settings) -> tuple[Knobs, ...]:
    """The mission's order: throttle partials, shrink the window, cut the beam (greedy with the int8 tier),
    refuse sessions."""
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
    greedy = replace(beam2, level=4, beam=1, tier="int8")
    closed = replace(greedy, level=5, admit_new_sessions=False)
    return (full, throttled, short_window, beam2, greedy, closed)


def validate_knobs(knobs: Knobs, settings: Settings) -> None:
    """Raise :class:`InvalidCommand` for the first knob outside what ``settings``' ladder spans.

    The rule is "the level is on the ladder and every knob lies within the ladder's range", not "the
    knobs are exactly one of the ladder's levels": each service builds the ladder from its own
    settings, so an exact match would refuse every command while a settings change rolls out, and
    again whenever a ladder gains a knob. The ranges are what keep a service working: a window that
    cuts hops, a partial cadence the assembler can keep, a beam the recognizer has a decoder for.
    """
    numbers = {
        "level": knobs.level,
        "emit_interval_ms": knobs.emit_interval_ms,
        "window_secs": knobs.window_secs,
        "beam": knobs.beam,
    }
    for name, value in numbers.items():
        if not math.isfinite(value):
            raise InvalidCommand(f"{name} {value} is not finite")
    steps = ladder(settings)
    top = len(steps) - 1
    if not 0 <= knobs.level <= top:
        raise InvalidCommand(f"level {knobs.level} is not on the ladder (0..{top})")
    low, high = settings.audio.min_window_secs, settings.audio.window_secs
    if not low <= knobs.window_secs <= high:
        raise InvalidCommand(f"window_secs {knobs.window_secs:g} is outside [{low:g}, {high:g}]")
    fast, slow = settings.assembler.emit_interval_ms, settings.assembler.throttled_emit_interval_ms
    if not fast <= knobs.emit_interval_ms <= slow:
        raise InvalidCommand(f"emit_interval_ms {knobs.emit_interval_ms} is outside [{fast}, {slow}]")
    beams = tuple(b for b in BEAMS if b <= settings.worker.beam)
    if knobs.beam not in beams:
        raise InvalidCommand(f"beam {knobs.beam} is not one of {beams}")
    tiers = tuple(dict.fromkeys(step.tier for step in steps))
    if knobs.tier not in tiers:
        raise InvalidCommand(f"tier {knobs.tier!r} is not one of {tiers}")


def validate_command(command: contracts.ControlCommand, settings: Settings) -> None:
    """Raise :class:`InvalidCommand` for a command no follower may apply (see :func:`validate_knobs`).

    ``seq`` starts at 1 so that a follower's "nothing applied yet" (0) is older than every real command.
    """
    if not command.scope:
        raise InvalidCommand("scope is empty")
    if command.seq < 1:
        raise InvalidCommand(f"seq {command.seq} is below 1")
    evidence = {"issued_ts_ms": command.issued_ts_ms, **{f"metrics[{k}]": v for k, v in command.metrics.items()}}
    for name, value in evidence.items():
        if not math.isfinite(value):
            raise InvalidCommand(f"{name} {value} is not finite")
    validate_knobs(_knobs(command), settings)


def command_record(
    seq: int,
    knobs: Knobs,
    reason: str,
    metrics: dict[str, float],
    scope: str,
    settings: Settings | None = None,
) -> contracts.ControlCommand:
    """The ControlCommand putting ``knobs`` in force, with the reason and the values behind it.

    Checked against ``settings`` when given (the controller always gives its own), so an invalid
    command is refused before it is published.
    """
    command = contracts.ControlCommand(
        scope=scope, seq=seq, **asdict(knobs), reason=reason, metrics=metrics, issued_ts_ms=now_ms()
    )
    if settings is not None:
        validate_command(command, settings)
    return command


def knobs_from_command(command: contracts.ControlCommand, settings: Settings) -> Knobs:
    """The knobs ``command`` puts in force; raises :class:`InvalidCommand` when no service may apply them."""
    validate_command(command, settings)
    return _knobs(command)


def _knobs(command: contracts.ControlCommand) -> Knobs:
    return Knobs(
        level=command.level,
        emit_interval_ms=command.emit_interval_ms,
        window_secs=round(command.window_secs, 6),
        beam=command.beam,
        admit_new_sessions=command.admit_new_sessions,
        tier=command.tier,
    )


def admission_refusal(knobs: Knobs, reason: str) -> str | None:
    """Why a new session is refused while the controller closes admission (every ingress says the same); else None."""
    if knobs.admit_new_sessions:
        return None
    why = f" ({reason})" if reason else ""
    return f"try again later: admission closed at degradation level {knobs.level}{why}"
