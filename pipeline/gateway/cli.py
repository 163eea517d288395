"""``hopline gateway`` (the WebSocket ingress for telephony and apps) and ``hopline bench gateway``."""

from __future__ import annotations

import argparse
import json

from pipeline.errors import CliError
from pipeline.settings import Settings

DESCRIPTION = """\
Accepts audio over WebSockets, sends it to the frames topic as 20 ms frames keyed by session, and sends
the sessions' transcripts back. Endpoints:
  /twilio                      Twilio Media Streams (mu-law 8 kHz, inbound track); session <tenant>/<callSid>;
                               token in start.customParameters.token (a <Parameter name="token"> in TwiML)
  /v1/stream                   first {"codec": "pcm16"|"mulaw"|"alaw", "sample_rate": 8000|16000}, then binary
                               audio of any length, then {"event": "end"}; the first reply names the session,
                               then its transcripts ({"event": "partial"|"final", ...}) come on the same socket
  /v1/transcripts/{session}    a session's transcripts, for a client of its tenant ({session} = <tenant>%2F<id>)
  /                            a browser page: the microphone streamed to /v1/stream (open it as /?token=<token>)
  /healthz, /metrics           plain HTTP
Tokens: HOPLINE_GATEWAY__TOKENS='{"tenant":"token"}' or HOPLINE_GATEWAY__TOKENS_FILE; presented as
Authorization: Bearer <token> or ?token=<token>. Limits: HOPLINE_GATEWAY__* (see README). Stops on SIGTERM:
every live session gets its end-of-stream frame, then the sockets close with 1001."""


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (0-65535; 0 picks a free one)")
    return port


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    gateway = commands.add_parser(
        "gateway",
        help="WebSocket ingress (Twilio Media Streams, /v1/stream) until SIGTERM",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gateway.add_argument(
        "--host", default=None, help="interface to listen on (default: HOPLINE_GATEWAY__HOST, 127.0.0.1)"
    )
    gateway.add_argument(
        "--port", type=_port, default=None, help="port (default: HOPLINE_GATEWAY__PORT, 8765; 0 picks a free one)"
    )
    gateway.set_defaults(handler=_run_gateway)

    bench_gateway = bench.add_parser(
        "gateway",
        help="N real-time WebSocket sessions through a gateway and the pipeline: word emission, finals, WER",
        description="Runs 'hopline demo --gateway' (broker, services and a gateway; with --url a running gateway "
        "and pipeline instead): N sample sessions with known word end times stream in real time as WebSocket "
        "clients, half Twilio calls, half /v1/stream. Prints word emission (word end in the audio -> first shown "
        "to the client) and end of speech -> final at p50/p95, WER, sessions refused, errors and the pipeline's "
        "latency components.",
    )
    bench_gateway.add_argument("--sessions", type=int, default=10, help="concurrent sessions (default 10)")
    bench_gateway.add_argument(
        "--duration", type=float, default=20.0, metavar="S", help="seconds of audio per session (default 20)"
    )
    bench_gateway.add_argument(
        "--url",
        default=None,
        metavar="ws://HOST:PORT",
        help="use this running gateway (tenant and token from HOPLINE_GATEWAY__TOKENS, one tenant)",
    )
    bench_gateway.add_argument("--json", action="store_true", help="print one JSON object")
    bench_gateway.set_defaults(handler=_bench_gateway)


def _run_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.gateway.service import run

    listen = {name: value for name, value in (("host", args.host), ("port", args.port)) if value is not None}
    return run(settings.override(gateway=listen))


def _bench_gateway(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.gateway.bench import run_bench

    if args.sessions < 1 or args.duration <= 0:
        raise CliError("--sessions must be at least 1 and --duration positive")
    result = run_bench(settings, args.sessions, args.duration, args.url, args.bootstrap_servers)
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:28s} {value}")
    return 0
