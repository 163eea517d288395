"""The gateway's browser page (``pipeline/gateway/static/index.html``) in headless Debian Chromium.

Chromium's fake microphone plays a sample WAV (looped); the page streams it to ``/v1/stream`` of a
``hopline gateway`` child in front of windower, worker and assembler children on the embedded
broker, and must show the sample's words as finals, with its latency figures. The browser is driven
over the Chrome DevTools protocol with ``websocket-client``: no browser download, Debian's
``/usr/bin/chromium`` (``make setup`` installs it).
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import subprocess
import time
import urllib.request
import wave
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websocket

from pipeline import audio
from pipeline.demo import SAMPLES_DIR
from pipeline.observe.wer import normalize
from pipeline.settings import Settings
from pipeline.supervisor import ServiceProcess
from tests.plugins.broker import SettingsFactory

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
SAMPLE = "call01.wav"
TOKEN = "page-token"
#: Seconds of silence after the sample in the fake microphone's file: each loop ends with an endpoint (600 ms).
PAD_S = 1.5
#: The page has this long to show one whole pass of the sample as finals.
SHOW_WITHIN_S = 60.0


def reference_text() -> str:
    manifest = json.loads((SAMPLES_DIR / "manifest.json").read_text())
    return next(entry["text"] for entry in manifest["samples"] if entry["file"] == SAMPLE)


def best_stretch_wer(reference: str, shown: str) -> float:
    """WER of ``reference`` against the stretch of ``shown`` that matches it best.

    The fake microphone loops its file and may start anywhere in it, so the reference may stand anywhere in
    what the page shows: an alignment that may start and end anywhere in ``shown`` at no cost.
    """
    ref, hyp = normalize(reference), normalize(shown)
    previous = [0] * (len(hyp) + 1)
    for i, word in enumerate(ref, start=1):
        current = [i]
        for j, heard in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != heard)))
        previous = current
    return min(previous) / len(ref)


def test_best_stretch_wer_finds_the_reference_anywhere() -> None:
    assert best_stretch_wer("a b c", "x y a b c z") == 0.0
    assert best_stretch_wer("a b c", "c z a b") == pytest.approx(1 / 3)
    assert best_stretch_wer("a b c", "") == 1.0


def write_microphone(path: Path) -> Path:
    """The sample with ``PAD_S`` of silence after it, as the 16-bit PCM mono WAV Chromium's fake device reads."""
    samples = audio.read_wav(SAMPLES_DIR / SAMPLE, 16000)
    padded = np.concatenate([samples, np.zeros(int(PAD_S * 16000), dtype=np.int16)])
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(16000)
        wav.writeframes(audio.pcm16_to_bytes(padded))
    return path


class DevTools:
    """One page over the DevTools protocol: a command waits for its reply; console lines are kept for failures."""

    def __init__(self, url: str) -> None:
        self._socket = websocket.create_connection(url, timeout=30, suppress_origin=True)
        self._ids = itertools.count(1)
        self.console: list[str] = []

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        self._socket.send(json.dumps({"id": command_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == command_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return dict(message.get("result", {}))
            self._keep(message)

    def evaluate(self, expression: str, gesture: bool = False) -> Any:
        """The expression's value; ``gesture`` runs it as a user's click would (audio may start)."""
        result = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True, userGesture=gesture
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def text(self, element_id: str) -> str:
        return str(self.evaluate(f"document.getElementById({json.dumps(element_id)}).textContent"))

    def figures(self, row: str) -> list[str]:
        """The cells of a row of the page's latency table: last, p50, p95, count."""
        cells = self.evaluate(f"[...document.getElementById({json.dumps(row)}).cells].map((c) => c.textContent)")
        return [str(cell) for cell in cells[1:]]

    def _keep(self, message: dict[str, Any]) -> None:
        params = message.get("params", {})
        if message.get("method") == "Runtime.consoleAPICalled":
            self.console.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
        elif message.get("method") == "Runtime.exceptionThrown":
            self.console.append(str(params["exceptionDetails"]))

    def close(self) -> None:
        self._socket.close()


@contextmanager
def chromium(microphone: Path, profile: Path, log: Path) -> Iterator[DevTools]:
    """Headless Chromium with the fake microphone playing ``microphone``; its one page, over DevTools."""
    command = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",  # the tests run as root
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        f"--user-data-dir={profile}",
        "--remote-debugging-port=0",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1000,720",
        "about:blank",
    ]
    with log.open("w") as output:
        browser = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        active_port = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not active_port.exists() or not active_port.read_text().strip():
            assert browser.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.1)
        port = active_port.read_text().split()[0]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as response:
            targets = json.loads(response.read())
        page = next(target for target in targets if target["type"] == "page")
        devtools = DevTools(page["webSocketDebuggerUrl"])
        try:
            devtools.call("Runtime.enable")
            yield devtools
        finally:
            devtools.close()
    finally:
        browser.terminate()
        try:
            browser.wait(10)
        except subprocess.TimeoutExpired:
            browser.kill()
            browser.wait()


@contextmanager
def pipeline_with_gateway(settings: Settings) -> Iterator[str]:
    """Windower, worker, assembler and a gateway as child services; yields the gateway's http://host:port."""
    with ExitStack() as stack:
        services = [stack.enter_context(ServiceProcess(settings, role)) for role in ("windower", "worker", "assembler")]
        gateway = stack.enter_context(ServiceProcess(settings, "gateway", "--port", "0"))
        for service in [*services, gateway]:
            service.wait_ready(120)
        match = re.search(r"gateway on ws://127\.0\.0\.1:(\d+)", gateway.output)
        assert match, gateway.output
        yield f"http://127.0.0.1:{match.group(1)}"
        for service in [gateway, *services]:
            assert service.terminate(30) == 0, service.output[-2000:]


def wait_for(condition: Any, timeout_s: float, every_s: float = 0.5) -> Any:
    """Poll ``condition()`` until it returns something true; that value, or the last one at the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(every_s)


def test_the_page_streams_the_microphone_and_shows_its_transcript(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    if not CHROMIUM.exists():
        pytest.skip(f"no {CHROMIUM}: Debian's chromium package is not installed ('make setup' installs it)")
    reference = reference_text()
    settings = make_settings(partitions=1, gateway={"tokens": {"acme": TOKEN}})
    microphone = write_microphone(tmp_path / "microphone.wav")
    with (
        pipeline_with_gateway(settings) as base,
        chromium(microphone, tmp_path / "profile", tmp_path / "chromium.log") as page,
    ):
        page.call("Page.navigate", url=f"{base}/?token={TOKEN}")
        assert wait_for(lambda: page.evaluate("document.readyState") == "complete", 20)
        assert page.text("status") == "Press Start to stream your microphone."
        page.evaluate("document.getElementById('start').click()", gesture=True)

        def shown_well() -> bool:
            return best_stretch_wer(reference, page.text("finals")) <= 0.25

        shown = wait_for(shown_well, SHOW_WITHIN_S)
        finals, status = page.text("finals"), page.text("status")
        assert shown, f"finals {finals!r}, status {status!r}, console {page.console}"
        assert wait_for(lambda: page.figures("word")[3] not in ("", "0"), 10), page.console
        # The next pass of the looping microphone: its words in grey until their final.
        partial = wait_for(lambda: page.text("partial"), 10, every_s=0.1)
        colors = page.evaluate("['finals', 'partial'].map((id) => getComputedStyle(document.getElementById(id)).color)")
        screenshot = base64.b64decode(page.call("Page.captureScreenshot", format="png")["data"])
        (tmp_path / "gateway-page.png").write_bytes(screenshot)
        word, e2e, pipeline = page.figures("word"), page.figures("e2e"), page.figures("pipeline")

        page.evaluate("document.getElementById('stop').click()", gesture=True)
        closed = wait_for(lambda: page.text("status").startswith("Closed"), 20)
        final_status = page.text("status")

    assert re.fullmatch(r"Streaming as session acme/[0-9a-f-]{36}", status)
    assert partial and colors == ["rgb(0, 0, 0)", "rgb(153, 153, 153)"], (partial, colors)
    assert closed and final_status.startswith("Closed 1000"), final_status
    assert screenshot.startswith(b"\x89PNG")
    # last, p50, p95 in ms and the count: word end in the audio -> shown; capture -> shown; capture -> published.
    word_p50, word_p95, words = int(word[1]), int(word[2]), int(word[3])
    assert words >= 1 and -300 <= word_p50 <= word_p95 <= 3000, word
    assert 0 < int(pipeline[1]) <= int(e2e[1]) <= 5000, (pipeline, e2e)
    assert int(e2e[3]) >= words
