"""``hopline demo``: the main job — the whole pipeline on the embedded broker, then its report."""

from __future__ import annotations

import argparse

from pipeline.settings import Settings


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
    demo.add_argument("--json", action="store_true", help="print one JSON object with the figures")
    demo.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.demo.service import run_demo_command

    return run_demo_command(
        settings,
        sessions=args.sessions,
        duration_s=args.duration,
        slowdown=args.slowdown,
        controller=not args.no_controller,
        compare_slowdown=args.compare_slowdown,
        as_json=args.json,
        samples_dir=args.samples,
        plot=args.plot,
        external_broker=args.bootstrap_servers is not None,
    )
