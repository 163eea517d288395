"""``hopline gateway`` (pipeline/gateway/service.py) against the embedded broker, with real WebSocket clients.

The gateway runs in this process on a thread of its own (one per test, on a free port); the last
test runs ``hopline gateway`` as a child service for its ready line, HTTP endpoints and SIGTERM.
Clients are the ``websockets`` asyncio client and, for Twilio, the independent ``websocket-client``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
import websocket
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from pipeline import audio, contracts
from pipeline.demo import SAMPLES_DIR
from pipeline.gateway.service import Gateway
from pipeline.kafka.clients import make_producer
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess
from tests.plugins.broker import SettingsFactory
from tests.plugins.builders import control_command, words
from tests.plugins.kafka import TopicReader, hopline, read_all, wait_for

pytestmark = pytest.mark.integration

TOKENS = {"acme": "acme-token", "globex": "globex-token"}
CALL_SID = "CA0123456789abcdef0123456789abcdef"
#: Clients pace audio at this multiple of real time after sending the first BURST_S at once.
SPEED = 1.8
BURST_S = 0.5


class InProcessGateway:
    """A :class:`Gateway` serving on a free port on its own thread and event loop."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = 0
        self._listening = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=asyncio.run, args=(self._main(),), name="test-gateway", daemon=True)
        self._thread.start()
        assert self._listening.wait(30), f"gateway did not listen: {self._error!r}"

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            await Gateway(self.settings).serve(self._stop, self._on_listening)
        except BaseException as exc:
            self._error = exc
            raise

    def _on_listening(self, port: int) -> None:
        self.port = port
        self._listening.set()

    def url(self, path: str, token: str | None = "acme-token") -> str:
        return f"ws://127.0.0.1:{self.port}{path}" + (f"?token={token}" if token else "")

    def close(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(30)
        assert self._error is None, repr(self._error)


@pytest.fixture
def gateway(make_settings: SettingsFactory) -> Iterator[Callable[..., InProcessGateway]]:
    """``gateway(max_sessions=10, ...)``: a running gateway with those gateway settings (tokens: TOKENS)."""
    started: list[InProcessGateway] = []

    def start(**changes: Any) -> InProcessGateway:
        settings = make_settings(gateway={"port": 0, "tokens": TOKENS, **changes})
        started.append(InProcessGateway(settings))
        return started[-1]

    yield start
    for running in started:
        running.close()


def run(scenario: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(asyncio.wait_for(scenario, 60))


def sample(name: str, rate: int) -> audio.Int16Array:
    return audio.read_wav(SAMPLES_DIR / name, rate)


async def paced(chunks: list[bytes], bytes_per_s: float) -> Any:
    """Yield ``chunks`` at ``SPEED`` x real time, the first ``BURST_S`` of audio at once."""
    start, sent = time.monotonic(), 0.0
    for chunk in chunks:
        delay = start + max(0.0, sent - BURST_S) / SPEED - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        yield chunk
        sent += len(chunk) / bytes_per_s


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in chunks cycling through ``sizes``."""
    chunks, at, index = [], 0, 0
    while at < len(data):
        size = sizes[index % len(sizes)]
        chunks.append(data[at : at + size])
        at, index = at + size, index + 1
    return chunks


async def start_stream(url: str, codec: str = "pcm16", rate: int = 16000) -> tuple[ClientConnection, str]:
    client = await connect(url)
    await client.send(json.dumps({"codec": codec, "sample_rate": rate}))
    reply = json.loads(await client.recv())
    assert reply["event"] == "session", reply
    return client, reply["session_id"]


async def stream_and_end(url: str, data: bytes, sizes: list[int]) -> str:
    """A whole ``/v1/stream`` session of 16 kHz PCM16; returns its session id."""
    client, session = await start_stream(url)
    async with client:
        async for chunk in paced(cut(data, sizes), 32000):
            await client.send(chunk)
        await client.send(json.dumps({"event": "end"}))
    return session


async def close_of(client: ClientConnection) -> tuple[int | None, str]:
    """Read until the server closes; its close code and reason."""
    with contextlib.suppress(ConnectionClosed):
        while True:
            await client.recv()
    return client.close_code, client.close_reason or ""


async def refused(url: str, *messages: str | bytes, headers: dict[str, str] | None = None) -> tuple[int | None, str]:
    """Connect, send ``messages``, and return how the server closed the socket."""
    async with connect(url, additional_headers=headers) as client:
        with contextlib.suppress(ConnectionClosed):
            for message in messages:
                await client.send(message)
        return await close_of(client)


def frames_of(records: list[contracts.AudioFrame], session: str) -> list[contracts.AudioFrame]:
    return [r for r in records if r.session_id == session]


def ended(session: str) -> Callable[[list[contracts.AudioFrame]], bool]:
    return lambda records: any(r.end_of_stream for r in frames_of(records, session))


def assert_one_whole_session(frames: list[contracts.AudioFrame], frame_bytes: int) -> None:
    assert frames, "no frames"
    assert [f.seq for f in frames] == list(range(len(frames)))
    assert [f.end_of_stream for f in frames] == [False] * (len(frames) - 1) + [True]
    assert {len(f.payload) for f in frames[:-1]} <= {frame_bytes} and frames[-1].payload == b""
    captures = [f.capture_ts_ms for f in frames]
    assert captures == sorted(captures)
    assert all(f.capture_ts_ms <= f.sent_ts_ms for f in frames)


def twilio_message(event: str, **body: Any) -> str:
    return json.dumps({"event": event, "sequenceNumber": "1", "streamSid": "MZ1", **body})


def twilio_start(token: str = "acme-token", call_sid: str = CALL_SID) -> str:
    start = {
        "accountSid": "AC1",
        "streamSid": "MZ1",
        "callSid": call_sid,
        "tracks": ["inbound", "outbound"],
        "customParameters": {"token": token},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return twilio_message("start", start=start)


def twilio_media(payload: bytes, timestamp_ms: int, track: str = "inbound") -> str:
    media = {
        "track": track,
        "chunk": "1",
        "timestamp": str(timestamp_ms),
        "payload": base64.b64encode(payload).decode(),
    }
    return twilio_message("media", media=media)


def transcript(session: str, kind: str, text: str) -> contracts.Transcript:
    return contracts.Transcript(
        session_id=session,
        kind=kind,
        segment=0,
        text=text,
        committed_text=text,
        tail_text="",
        words=words((text, 100, 400)),
        hop_seq=7,
        first_capture_ts_ms=time.time() * 1000.0,
        published_ts_ms=time.time() * 1000.0,
    )


# -- streaming --------------------------------------------------------------------------------


def test_a_plain_client_streams_a_sample_as_20_ms_frames(gateway: Callable[..., InProcessGateway]) -> None:
    running = gateway()
    pcm = audio.pcm16_to_bytes(sample("call07.wav", 16000))
    with TopicReader(running.settings, {running.settings.topics.frames: contracts.AudioFrame}) as reader:
        session = run(stream_and_end(running.url("/v1/stream"), pcm, [3000, 641, 17]))
        frames = frames_of(reader.until(ended(session)), session)
    assert re.fullmatch(r"acme/[0-9a-f-]{36}", session)
    assert_one_whole_session(frames, 640)
    assert {(f.codec, f.sample_rate) for f in frames} == {("pcm16", 16000)}
    assert len(frames) == -(-len(pcm) // 640) + 1
    decoded = np.concatenate([audio.decode(f.payload, "pcm16") for f in frames])
    assert np.array_equal(decoded[: len(pcm) // 2], audio.pcm16_from_bytes(pcm))
    assert not decoded[len(pcm) // 2 :].any()


def test_a_twilio_stream_becomes_frames_of_its_call(gateway: Callable[..., InProcessGateway]) -> None:
    running = gateway()
    mulaw = audio.encode(sample("call03.wav", 8000), "mulaw")
    client = websocket.create_connection(running.url("/twilio", token=None), timeout=10)
    with TopicReader(running.settings, {running.settings.topics.frames: contracts.AudioFrame}) as reader:
        client.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        client.send(twilio_start())
        start, at = time.monotonic(), 0
        for chunk in cut(mulaw, [160, 160, 100, 333]):
            client.send(twilio_media(chunk, at // 8))
            client.send(twilio_media(bytes(len(chunk)), at // 8, track="outbound"))  # the agent's side: ignored
            at += len(chunk)
            time.sleep(max(0.0, start + max(0.0, at / 8000 - BURST_S) / SPEED - time.monotonic()))
        client.send(twilio_message("mark", mark={"name": "greeting"}))
        client.send(twilio_message("dtmf", dtmf={"track": "inbound_track", "digit": "5"}))
        client.send(twilio_message("stop", stop={"accountSid": "AC1", "callSid": CALL_SID}))
        opcode, data = client.recv_data(control_frame=True)  # answered with a close frame
        client.shutdown()
        frames = frames_of(reader.until(ended(f"acme/{CALL_SID}")), f"acme/{CALL_SID}")
    assert opcode == websocket.ABNF.OPCODE_CLOSE
    assert struct.unpack("!H", data[:2])[0] == 1000 and data[2:] == b"stream stopped"
    assert_one_whole_session(frames, 160)
    assert {(f.codec, f.sample_rate) for f in frames} == {("mulaw", 8000)}
    joined = b"".join(f.payload for f in frames)
    assert joined[: len(mulaw)] == mulaw and set(joined[len(mulaw) :]) <= {0xFF}


# -- refusals ---------------------------------------------------------------------------------


def test_without_a_valid_token_nothing_is_accepted(gateway: Callable[..., InProcessGateway]) -> None:
    running = gateway()
    start = json.dumps({"codec": "pcm16", "sample_rate": 16000})

    async def scenario() -> list[tuple[int | None, str]]:
        return [
            await refused(running.url("/v1/stream", token=None), start, bytes(640)),
            await refused(running.url("/v1/stream", token="acme-tokeN"), start, bytes(640)),
            await refused(
                running.url("/v1/stream", token=None), start, headers={"Authorization": "Bearer not-a-token"}
            ),
            await refused(running.url("/twilio", token=None), twilio_start(token="nope"), twilio_media(bytes(160), 0)),
            await refused(running.url("/twilio", token=None), twilio_start(token=""), twilio_media(bytes(160), 0)),
        ]

    closes = run(scenario())
    assert [code for code, _ in closes] == [1008] * 5
    assert [reason.split(" (")[0] for _, reason in closes] == [
        "missing token",
        "invalid token",
        "invalid token",
        "invalid token",
        "missing token",
    ]
    time.sleep(0.3)
    assert read_all(running.settings, running.settings.topics.frames, contracts.AudioFrame) == []


def test_a_bad_message_closes_only_its_own_socket(gateway: Callable[..., InProcessGateway]) -> None:
    running = gateway(max_message_bytes=16000)
    pcm = audio.pcm16_to_bytes(sample("call01.wav", 16000)[: 16000 * 3])
    start = json.dumps({"codec": "pcm16", "sample_rate": 16000})

    async def scenario() -> tuple[str, list[tuple[int | None, str]]]:
        good = asyncio.create_task(stream_and_end(running.url("/v1/stream"), pcm, [640]))
        await asyncio.sleep(0.2)
        closes = [
            await refused(running.url("/v1/stream"), '{"codec": "pcm16", "sample_rate": '),
            await refused(running.url("/v1/stream"), start, bytes(640), '{"event": "pause"}'),
            await refused(running.url("/v1/stream"), json.dumps({"codec": "mulaw", "sample_rate": 16000})),
            await refused(running.url("/v1/stream"), start, bytes(16002)),
            await refused(running.url("/twilio"), twilio_start(call_sid="CA1"), "{not json"),
            await refused(running.url("/twilio"), twilio_message("clear")),
        ]
        assert not good.done(), "the good session should still be streaming"
        return await good, closes

    with TopicReader(running.settings, {running.settings.topics.frames: contracts.AudioFrame}) as reader:
        session, closes = run(scenario())
        records = reader.until(lambda records: ended(session)(records) and ended("acme/CA1")(records))
    assert [code for code, _ in closes] == [1008, 1008, 1003, 1009, 1008, 1008]
    reasons = [reason for _, reason in closes]
    assert reasons[0].startswith("malformed JSON") and reasons[4].startswith("malformed JSON")
    assert reasons[1].startswith("unknown event 'pause'") and reasons[5] == "unknown event 'clear'"
    assert reasons[2] == "mulaw is G.711: 8000 Hz only (got 16000)"
    assert reasons[3] == "frame exceeds limit of 16000 bytes"
    assert_one_whole_session(frames_of(records, session), 640)
    assert len(frames_of(records, session)) == len(pcm) // 640 + 1


def test_audio_faster_than_twice_real_time_is_cut_and_the_session_ended(
    gateway: Callable[..., InProcessGateway],
) -> None:
    running = gateway()

    async def flood() -> tuple[str, tuple[int | None, str], int]:
        client, session = await start_stream(running.url("/v1/stream"))
        sent = 0
        with contextlib.suppress(ConnectionClosed):
            for _ in range(500):  # 10 s of audio as fast as the socket takes it
                await client.send(bytes(640))
                sent += 1
                await asyncio.sleep(0.001)
        return session, await close_of(client), sent

    with TopicReader(running.settings, {running.settings.topics.frames: contracts.AudioFrame}) as reader:
        session, (code, reason), sent = run(flood())
        frames = frames_of(reader.until(ended(session)), session)
    assert (code, reason) == (1008, "faster than real time: audio arrives above 2x real time")
    assert sent < 500
    assert_one_whole_session(frames, 640)
    assert 50 <= len(frames) - 1 < 250  # the 1 s burst plus 2x the time it took, not the 10 s sent


def test_a_client_that_vanishes_mid_stream_still_ends_its_session(gateway: Callable[..., InProcessGateway]) -> None:
    running = gateway()

    async def vanish() -> str:
        client, session = await start_stream(running.url("/v1/stream"))
        for _ in range(20):
            await client.send(bytes(640))
        await asyncio.sleep(0.1)
        client.transport.abort()  # no close frame: a dropped connection
        return session

    with TopicReader(running.settings, {running.settings.topics.frames: contracts.AudioFrame}) as reader:
        session = run(vanish())
        frames = frames_of(reader.until(ended(session), timeout_s=10), session)
    assert_one_whole_session(frames, 640)
    assert len(frames) == 21


def test_an_idle_session_is_ended_and_closed_with_the_reason(gateway: Callable[..., InProcessGateway]) -> None:
    running = gateway(idle_timeout_s=0.5)

    async def go_quiet() -> tuple[str, tuple[int | None, str]]:
        client, session = await start_stream(running.url("/v1/stream"))
        await client.send(bytes(1000))
        return session, await close_of(client)

    with TopicReader(running.settings, {running.settings.topics.frames: contracts.AudioFrame}) as reader:
        session, close = run(go_quiet())
        frames = frames_of(reader.until(ended(session)), session)
    assert close == (1000, "idle: no audio for 0.5 s")
    assert [len(f.payload) for f in frames] == [640, 640, 0]


def test_admission_closed_by_the_controller_refuses_new_sessions(gateway: Callable[..., InProcessGateway]) -> None:
    running = gateway()
    settings = running.settings
    producer = make_producer(settings)
    command = control_command(settings, 5, reason="queue_wait p95 310 ms")
    producer.produce(settings.topics.control, key=command.scope.encode(), value=command.encode())
    assert producer.flush(10) == 0
    start = json.dumps({"codec": "pcm16", "sample_rate": 16000})

    async def until_refused() -> tuple[int | None, str]:
        deadline = time.monotonic() + 10
        while True:  # the follower fetches the control topic every 250 ms
            async with connect(running.url("/v1/stream")) as client:
                await client.send(start)
                with contextlib.suppress(ConnectionClosed):
                    await client.recv()  # the session, while admission is still open
                if client.close_code is not None or time.monotonic() > deadline:
                    return await close_of(client)
            await asyncio.sleep(0.1)

    code, reason = run(until_refused())
    assert code == 1013
    assert reason == "try again later: admission closed at degradation level 5 (queue_wait p95 310 ms)"


def test_sessions_past_the_tenant_limit_are_refused(gateway: Callable[..., InProcessGateway]) -> None:
    running = gateway(max_sessions_per_tenant=1)
    start = json.dumps({"codec": "pcm16", "sample_rate": 16000})

    async def scenario() -> tuple[tuple[int | None, str], str]:
        first, _session = await start_stream(running.url("/v1/stream"))
        async with first:
            second = await refused(running.url("/v1/stream"), start)
            other, other_session = await start_stream(running.url("/v1/stream", token="globex-token"))
            await other.close()
        return second, other_session

    (code, reason), other_session = run(scenario())
    assert (code, reason) == (1013, "try again later: tenant at 1 sessions")
    assert other_session.startswith("globex/")


def test_two_hundred_idle_connections_and_a_new_session_is_still_served(
    gateway: Callable[..., InProcessGateway],
) -> None:
    running = gateway(max_sessions=1000, max_sessions_per_tenant=1000)
    pcm = bytes(16000)  # 0.5 s of silence

    async def scenario() -> tuple[list[str], str, dict[str, Any]]:
        idle = await asyncio.gather(*(start_stream(running.url("/v1/stream")) for _ in range(200)))
        served = await stream_and_end(running.url("/v1/stream"), pcm, [640])
        health = await asyncio.to_thread(http_get, f"http://127.0.0.1:{running.port}/healthz")
        await asyncio.gather(*(client.close() for client, _ in idle))
        return [session for _, session in idle], served, json.loads(health[1])

    with TopicReader(running.settings, {running.settings.topics.frames: contracts.AudioFrame}) as reader:
        idle, served, health = run(scenario())
        frames = frames_of(reader.until(ended(served)), served)
    assert len(set(idle)) == 200
    assert health["status"] == "ok" and health["sessions"] >= 200
    assert_one_whole_session(frames, 640)


# -- transcripts ------------------------------------------------------------------------------


def test_transcripts_reach_their_session_and_same_tenant_subscribers_only(
    gateway: Callable[..., InProcessGateway],
) -> None:
    running = gateway()
    settings = running.settings
    dead_letters = settings.topics.dead_letter(settings.topics.transcripts)
    acme_call, globex_call = f"acme/{CALL_SID}", f"globex/{CALL_SID}"

    async def scenario() -> tuple[list[dict[str, Any]], ...]:
        plain, plain_session = await start_stream(running.url("/v1/stream"))
        twilio = await connect(running.url("/twilio", token=None))
        await twilio.send(twilio_start())
        subscribers = []
        for path, token in [(acme_call, "acme-token"), (globex_call, "globex-token")]:
            url = running.url(f"/v1/transcripts/{quote(path, safe='')}", token=None)
            subscriber = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
            assert json.loads(await subscriber.recv()) == {"event": "subscribed", "session_id": path}
            subscribers.append(subscriber)
        intruder = await refused(running.url(f"/v1/transcripts/{quote(acme_call, safe='')}", token="globex-token"))
        assert intruder == (1008, "session belongs to another tenant")

        producer = make_producer(settings)
        for record in [
            transcript(plain_session, "partial", "large"),
            transcript(acme_call, "partial", "coupon"),
            transcript("acme/someone-else", "final", "nobody"),
            transcript(plain_session, "final", "large queso"),
            transcript(acme_call, "final", "coupon please"),
            transcript(globex_call, "final", "globex only"),
        ]:
            producer.produce(settings.topics.transcripts, key=record.session_id.encode(), value=record.encode())
        for session in (acme_call, "acme/someone-else"):  # dead-lettered for a watched session, else ignored
            producer.produce(settings.topics.transcripts, key=session.encode(), value=b"\x00 not a transcript")
        assert producer.flush(10) == 0

        async def take(client: ClientConnection, count: int) -> list[dict[str, Any]]:
            return [json.loads(await asyncio.wait_for(client.recv(), 10)) for _ in range(count)]

        received = (await take(plain, 2), await take(subscribers[0], 2), await take(subscribers[1], 1))
        for client in [plain, *subscribers]:  # and nothing else, of any session
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(client.recv(), 0.3)
        for client in [plain, twilio, *subscribers]:
            await client.close()
        return received

    plain, acme, globex = run(scenario())
    assert [(m["event"], m["text"]) for m in plain] == [("partial", "large"), ("final", "large queso")]
    assert [(m["event"], m["session_id"], m["text"]) for m in acme] == [
        ("partial", acme_call, "coupon"),
        ("final", acme_call, "coupon please"),
    ]
    assert [(m["session_id"], m["text"]) for m in globex] == [(globex_call, "globex only")]
    assert plain[1]["words"] == [
        {"word": "large queso", "start_ms": 100.0, "end_ms": 400.0, "confidence": pytest.approx(0.9)}
    ]
    assert plain[1]["hop_seq"] == 7 and plain[1]["segment"] == 0
    letters: list[contracts.DeadLetter] = []

    def dead_lettered() -> bool:
        letters[:] = read_all(settings, dead_letters, contracts.DeadLetter)
        return bool(letters)

    assert wait_for(dead_lettered, 10, interval_s=0.5)
    assert [(letter.key, letter.value, letter.service) for letter in letters] == [
        (acme_call.encode(), b"\x00 not a transcript", "gateway")
    ]
    assert "unreadable transcript" in letters[0].reason


# -- the service ------------------------------------------------------------------------------


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_hopline_gateway_serves_http_and_ends_every_session_on_sigterm(make_settings: SettingsFactory) -> None:
    settings = make_settings(gateway={"tokens": TOKENS})
    bad = hopline(settings, "gateway", "--port", "70000")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "not a TCP port" in bad.stderr
    with (
        ServiceProcess(settings, "gateway", "--port", "0") as service,
        TopicReader(settings, {settings.topics.frames: contracts.AudioFrame}) as reader,
    ):
        service.wait_ready()
        match = re.search(r"gateway on ws://127\.0\.0\.1:(\d+)", service.output)
        assert match, service.output
        base = f"127.0.0.1:{match.group(1)}"

        async def scenario() -> tuple[str, str, tuple[int | None, str]]:
            client, session = await start_stream(f"ws://{base}/v1/stream?token=acme-token")
            for _ in range(10):
                await client.send(bytes(640))
            await asyncio.sleep(0.2)
            metrics = (await asyncio.to_thread(http_get, f"http://{base}/metrics"))[1]
            service.process.terminate()  # SIGTERM
            return session, metrics, await close_of(client)

        status, body = http_get(f"http://{base}/healthz")
        assert status == 200 and json.loads(body) == {"status": "ok", "sessions": 0, "connections": 0}
        assert http_get(f"http://{base}/nowhere")[0] == 404
        session, metrics, close = run(scenario())
        assert service.wait(20) == 0
        frames = frames_of(reader.until(ended(session)), session)
    assert close == (1001, "gateway shutting down")
    assert_one_whole_session(frames, 640)
    assert len(frames) == 11
    assert 'hopline_gateway_sessions_total{protocol="stream"} 1.0' in metrics
    assert 'hopline_gateway_frames_total{protocol="stream"} 10.0' in metrics
    assert "HOPLINE-STATS gateway" in service.output
