"""``hopline worker``, ``hopline bench worker`` and ``hopline bench stitching`` (light: torch loads in the handlers)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pipeline.errors import CliError
from pipeline.settings import Settings
from workers.asr.backends import BACKENDS

DEFAULT_SWEEP = (1, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 32)


def register(commands: argparse._SubParsersAction, bench: argparse._SubParsersAction) -> None:
    worker = commands.add_parser(
        "worker",
        help="run a recognizer worker: hops in, micro-batched inference, hypotheses out",
        description="Joins the <prefix>-worker consumer group on the hops topic (several workers share the "
        "partitions), micro-batches hops under HOPLINE_WORKER__MAX_LATENCY_MS and publishes one hypothesis "
        "per processed hop. CUDA when available, else CPU. SIGTERM drains, commits and exits 0.",
    )
    worker.add_argument("--max-latency-ms", type=float, default=None, help="cap on the first hop's batch wait")
    worker.add_argument("--max-batch-size", type=int, default=None, help="hops per batch at most")
    worker.add_argument(
        "--no-coalesce", action="store_true", help="run every hop, even ones a newer waiting hop supersedes"
    )
    worker.add_argument("--device", default=None, help="auto | cpu | cuda | cuda:N")
    worker.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    worker.add_argument("--worker-id", default=None, help="name on hypotheses (default host:pid)")
    worker.add_argument(
        "--recognizer",
        choices=BACKENDS,
        default=None,
        help="acoustic backend: torch (the project's checkpoint) or onnx (an exported CTC model, docs/byo-model.md)",
    )
    worker.add_argument(
        "--checkpoint",
        default=None,
        help="the recognizer's model: a torch checkpoint (default: the shipped one) or, for onnx, the .onnx file",
    )
    worker.add_argument(
        "--fault-slowdown",
        type=float,
        default=None,
        metavar="X",
        help="TEST KNOB for overload experiments: after each batch sleep (X-1) x its inference time, "
        "like a GPU X times slower (default 1 = off)",
    )
    worker.set_defaults(handler=_run_worker)

    bench_worker = bench.add_parser(
        "worker",
        help="feed real-time hops for N sessions through a real worker; per-component p50/p95 and capacity",
        description="Starts an embedded broker and a worker process, feeds 160 ms hops of real speech "
        "(samples/*.wav, else espeak-ng) for each session count of a sweep, reads the hypotheses and "
        "prints batch_wait, queue_wait and gpu_infer p50/p95, the batch-size distribution, and the "
        "largest session count whose queue_wait p95 stays under --queue-wait-limit-ms.",
    )
    bench_worker.add_argument("--sessions", type=int, default=10, help="headline session count (default 10)")
    bench_worker.add_argument("--duration", type=float, default=20.0, help="seconds of audio per session count")
    bench_worker.add_argument(
        "--sweep",
        default=",".join(str(n) for n in DEFAULT_SWEEP),
        help="session counts to try in order, comma-separated; stops after the first over the limit",
    )
    bench_worker.add_argument("--no-sweep", action="store_true", help="run --sessions only")
    bench_worker.add_argument("--queue-wait-limit-ms", type=float, default=50.0, help="capacity criterion (p95)")
    bench_worker.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    bench_worker.add_argument("--write-doc", type=Path, default=None, help="write the capacity curve as markdown")
    bench_worker.add_argument("--fault-slowdown", type=float, default=None, metavar="X", help="passed to the worker")
    bench_worker.set_defaults(handler=_run_bench)

    bench_stitching = bench.add_parser(
        "stitching",
        help="real recognizer on rolling windows of the bundled samples: stitched WER vs whole-utterance WER",
        description="Cuts each sample into the windower's rolling windows, recognizes every window, stitches "
        "the hypotheses like the assembler and compares the finals' WER with one decode of the whole "
        "utterance; prints how long (in audio time) after a word ends it is first shown and committed. "
        "The window is HOPLINE_AUDIO__WINDOW_SECS (1.28; 0.96 is the controller's shrunk window).",
    )
    bench_stitching.add_argument("--samples", type=int, default=5, help="how many bundled samples (default 5)")
    bench_stitching.add_argument("--beam", type=int, choices=(1, 2, 4), default=4, help="beam width (default 4)")
    bench_stitching.add_argument("--json", action="store_true", help="print one JSON object")
    bench_stitching.set_defaults(handler=_bench_stitching)


def _apply_worker_overrides(args: argparse.Namespace, settings: Settings) -> Settings:
    """The settings with the worker flags given on the command line; pydantic checks their bounds."""
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise CliError(f"--checkpoint {args.checkpoint}: no such file")
    flags = {
        "max_latency_ms": args.max_latency_ms,
        "max_batch_size": args.max_batch_size,
        "coalesce_stale_hops": False if args.no_coalesce else None,
        "device": args.device,
        "torch_threads": args.threads,
        "worker_id": args.worker_id,
        "recognizer": args.recognizer,
        "checkpoint": args.checkpoint,
        "fault_slowdown": args.fault_slowdown,
    }
    return settings.override(worker={key: value for key, value in flags.items() if value is not None})


def _run_worker(args: argparse.Namespace, settings: Settings) -> int:
    settings = _apply_worker_overrides(args, settings)
    from workers.worker.service import run_worker

    return run_worker(settings)


def _parse_sweep(text: str) -> list[int]:
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise CliError(f"--sweep must be comma-separated session counts, got {text!r}") from None
    if not counts or counts[0] < 1:
        raise CliError("--sweep needs session counts of at least 1")
    return counts


def _run_bench(args: argparse.Namespace, settings: Settings) -> int:
    from workers.worker.bench import format_report, run_bench, write_capacity_doc

    if args.sessions < 1:
        raise CliError("--sessions must be at least 1")
    if args.duration < 1.0:
        raise CliError("--duration must be at least 1 second")
    if args.fault_slowdown is not None:
        settings = settings.override(worker={"fault_slowdown": args.fault_slowdown})
    sweep = [] if args.no_sweep else _parse_sweep(args.sweep)
    result = run_bench(
        settings,
        sessions=args.sessions,
        duration_s=args.duration,
        sweep=sweep,
        queue_wait_limit_ms=args.queue_wait_limit_ms,
        progress=not args.json,
    )
    if args.write_doc is not None:
        write_capacity_doc(args.write_doc, result)
    print(json.dumps(result) if args.json else format_report(result), flush=True)
    return 0


def _bench_stitching(args: argparse.Namespace, settings: Settings) -> int:
    from workers.worker.stitching_bench import format_report, run_bench

    if args.samples < 1:
        raise CliError("--samples must be at least 1")
    summary, results = run_bench(settings, samples=args.samples, beam=args.beam)
    print(json.dumps(summary) if args.json else format_report(summary, results))
    return 0
