"""``hopline produce``: stream WAV files into the frames topic as a gateway would."""

from __future__ import annotations

import argparse
import logging

from pipeline import audio
from pipeline.errors import CliError
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    produce = commands.add_parser(
        "produce",
        help="stream a WAV file as 20 ms frames to the frames topic",
        description="Reads any PCM WAV (mono or not, any rate), converts it to --codec at --rate and "
        "publishes it as 20 ms AudioFrame records keyed by session, ending with an end-of-stream frame.",
    )
    produce.add_argument("file", help="WAV file")
    produce.add_argument("--session", required=True, help="session id (with --sessions N: ID-0 .. ID-N-1)")
    produce.add_argument("--codec", choices=("pcm16", "mulaw", "alaw"), default="pcm16")
    produce.add_argument(
        "--rate", type=int, choices=(8000, 16000), default=None, help="default: 16000 (8000 for G.711)"
    )
    produce.add_argument(
        "--realtime", action="store_true", help="pace frames in real time (default: as fast as possible)"
    )
    produce.add_argument("--sessions", type=int, default=1, help="send the file as N concurrent sessions")
    produce.set_defaults(handler=_produce)


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.control.follower import ControlFollower
    from pipeline.ingress.service import AudioProducer, AudioStream

    rate = args.rate or (16000 if args.codec == "pcm16" else 8000)
    problem = audio.format_error(args.codec, rate)
    if problem is not None:
        raise CliError(f"--codec {args.codec} --rate {rate}: {problem}")
    if args.sessions < 1:
        raise CliError("--sessions must be at least 1")
    try:
        samples = audio.read_wav(args.file, rate)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    ids = [args.session] if args.sessions == 1 else [f"{args.session}-{i}" for i in range(args.sessions)]
    streams = [AudioStream(session_id, samples, args.codec, rate) for session_id in ids]
    control = ControlFollower(settings).start()
    producer = AudioProducer(settings, control=control)
    try:
        sent = producer.stream_many(streams, realtime=args.realtime)
    finally:
        report = producer.close()
        control.close()
    print(
        f"{len(sent)} session(s) sent, {len(ids) - len(sent)} refused; frames sent {report.sent}, "
        f"delivered {report.delivered}, failed {report.failed}, pending {report.pending}"
    )
    if not sent:
        raise CliError("every session was refused: admission is closed")
    return 1 if report.failed or report.pending else 0
