"""``hopline demo``: the main job — the whole pipeline on the embedded broker, then its report;
``hopline soak``: a long run of it that reports what grows."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TypeVar

from pipeline.demo.scenarios import Burst, SlowdownWindow
from pipeline.settings import Settings

T = TypeVar("T")


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    demo = commands.add_parser(
        "demo",
        help="run broker, windower, worker, assembler and controller; stream sample sessions; report",
        description="Starts the embedded broker (or, with --bootstrap-servers, uses that Kafka, e.g. Apache Kafka "
        "from docker-compose.yml on 127.0.0.1:29092) and every service as child processes, streams the bundled "
        "samples as concurrent real-time sessions (two in ten as 8 kHz mu-law), prints progress every second, "
        "then the latency report (p50/p95 per component), example transcripts with WER, and the services' "
        "exit codes after SIGTERM.",
    )
    demo.add_argument("--sessions", type=int, default=10, help="concurrent sessions (default 10)")
    demo.add_argument(
        "--duration", type=float, default=20.0, metavar="S", help="seconds of audio per session (default 20)"
    )
    demo.add_argument("--slowdown", type=float, default=1.0, metavar="K", help="worker fault slowdown (default 1)")
    demo.add_argument(
        "--slowdown-at",
        type=_scenario(SlowdownWindow.parse),
        default=None,
        metavar="T1:T2:K",
        help="slow the worker K times only from T1 to T2 seconds of streaming (recovery is measured after T2)",
    )
    demo.add_argument(
        "--burst",
        type=_scenario(Burst.parse),
        default=None,
        metavar="N@T",
        help="N more sessions join T seconds into the run (admission control applies as each joins)",
    )
    demo.add_argument("--no-controller", action="store_true", help="run without the degradation controller")
    demo.add_argument(
        "--compare-slowdown",
        type=float,
        default=None,
        metavar="K",
        help="run twice with the worker slowed K times, with and without the controller, side by side",
    )
    demo.add_argument(
        "--samples", default=None, metavar="DIR", help="a manifest.json + WAV directory (default: the bundled samples/)"
    )
    demo.add_argument("--plot", default=None, metavar="OUT.png", help="draw the latency breakdown over time")
    demo.add_argument(
        "--gateway",
        action="store_true",
        help="the sessions enter through a 'hopline gateway' child as real-time WebSocket clients (half Twilio "
        "mu-law 8 kHz calls followed on /v1/transcripts, half /v1/stream PCM16 16 kHz); word emission, finals and "
        "delivery are measured on the clients' sockets",
    )
    demo.add_argument(
        "--gateway-url",
        default=None,
        metavar="ws://HOST:PORT",
        help="like --gateway, through a running gateway and pipeline instead (no broker or services: the "
        "clients' figures only); tenant and token from HOPLINE_GATEWAY__TOKENS (one tenant)",
    )
    demo.add_argument("--json", action="store_true", help="print one JSON object with the figures")
    demo.set_defaults(handler=_run_demo)

    soak = commands.add_parser(
        "soak",
        help="run the main job for minutes and report what grows: RSS, changelog bytes, dead letters, e2e",
        description="Runs the main job (as 'hopline demo') streaming for --minutes and reports what grows: each "
        "service's resident memory (windower, worker, assembler, controller and this process; VmRSS after the "
        "warm-up, once a minute and at the end), the bytes written to the state changelog topics per session per "
        "minute, the records on each dead-letter topic, and e2e p95 per minute, with the WER and the highest "
        "degradation level. The embedded broker slows down as it stores batches (after a few minutes at 10 "
        "sessions; the run warns when it will), so long soaks belong on Apache Kafka: "
        "'hopline --bootstrap-servers HOST:PORT soak ...'.",
    )
    soak.add_argument("--sessions", type=int, default=10, help="concurrent sessions (default 10)")
    soak.add_argument(
        "--minutes", type=float, default=5.0, metavar="M", help="minutes of streaming, fractions allowed (default 5)"
    )
    soak.add_argument("--json", action="store_true", help="print one JSON object with the figures")
    soak.set_defaults(handler=_run_soak)


def _run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.demo.service import run_demo_command

    return run_demo_command(
        settings,
        sessions=args.sessions,
        duration_s=args.duration,
        slowdown=args.slowdown,
        slowdown_at=args.slowdown_at,
        burst=args.burst,
        controller=not args.no_controller,
        compare_slowdown=args.compare_slowdown,
        as_json=args.json,
        samples_dir=args.samples,
        plot=args.plot,
        external_broker=args.bootstrap_servers is not None,
        gateway=args.gateway,
        gateway_url=args.gateway_url,
    )


def _run_soak(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.demo.soak import run_soak_command

    return run_soak_command(
        settings,
        sessions=args.sessions,
        minutes=args.minutes,
        as_json=args.json,
        external_broker=args.bootstrap_servers is not None,
    )


def _scenario(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse type from a scenario parser: its ValueError becomes argparse's one-line error."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert
