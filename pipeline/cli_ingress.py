"""``hopline produce``, ``hopline windower`` and ``hopline bench windower``: the ingress commands."""

from __future__ import annotations

import argparse
import json
import logging

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

    windower = commands.add_parser(
        "windower",
        help="run the hop windower (faust agent: frames -> 160 ms hops) until SIGTERM/Ctrl-C",
    )
    windower.set_defaults(handler=_windower)

    bench_windower = bench.add_parser(
        "windower",
        help="N real-time sessions through a real windower process on the embedded broker",
        description="Starts an embedded broker (unless --bootstrap-servers is given), a windower process and "
        "N paced sessions; prints frames/s, hop emission latency (ready -> published) and CPU per session.",
    )
    bench_windower.add_argument("--sessions", type=int, default=100)
    bench_windower.add_argument("--seconds", type=float, default=20.0, help="measured audio per session")
    bench_windower.add_argument("--json", action="store_true", help="print one JSON object")
    bench_windower.set_defaults(handler=_bench_windower)


def _produce(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.control import ControlFollower
    from pipeline.producer import AudioProducer, AudioStream, read_wav

    rate = args.rate or (16000 if args.codec == "pcm16" else 8000)
    if args.codec != "pcm16" and rate != 8000:
        raise CliError(f"{args.codec} is G.711: --rate must be 8000")
    if args.sessions < 1:
        raise CliError("--sessions must be at least 1")
    try:
        samples = read_wav(args.file, rate)
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


def _windower(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.windower import run_windower

    return run_windower(settings)


def _bench_windower(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.windower_bench import run_bench

    if args.sessions < 1 or args.seconds <= 0:
        raise CliError("--sessions must be at least 1 and --seconds positive")
    result = run_bench(settings, args.sessions, args.seconds, external_broker=args.bootstrap_servers is not None)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:36s} {value}")
    return 0
