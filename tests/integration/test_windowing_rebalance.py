"""Two windower processes share the frames partitions; one stops mid-stream and the other takes its sessions over."""

from __future__ import annotations

import pytest

from pipeline import contracts
from pipeline.clock import now_ms
from pipeline.ingress.service import AudioProducer, AudioStream
from pipeline.supervisor import ServiceProcess
from tests.integration.test_windowing_service import assert_hops_match, hops_by_session, speech_like
from tests.plugins.broker import SettingsFactory
from tests.plugins.kafka import TopicReader

pytestmark = pytest.mark.integration


def test_a_windower_taking_over_the_partitions_of_one_stopped_loses_and_renumbers_no_hop(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(partitions=4)
    streams = [AudioStream(f"moving-{n}", speech_like(2.0, 16000, n)) for n in range(8)]
    producer = AudioProducer(settings)
    payloads = {s.session_id: producer.frames_of(s) for s in streams}
    joined, cut = 20, 45  # the second windower joins at frame 20 and stops at 45, mid-hop
    hops_reader = TopicReader(settings, {settings.topics.hops: contracts.Hop})
    start = now_ms()

    def send(seqs: range) -> None:
        for seq in seqs:
            for stream in streams:
                last = seq == len(payloads[stream.session_id])
                payload = b"" if last else payloads[stream.session_id][seq]
                producer.send_frame(stream, seq, payload, start + 20 * seq, eos=last)
        assert producer.flush() == 0

    def until_hops(frames: int) -> None:
        hops_reader.until(lambda got: len({(h.session_id, h.hop_seq) for h in got}) == len(streams) * (frames // 8))

    with ServiceProcess(settings, "windower") as staying:
        staying.wait_ready()
        send(range(joined))  # every session starts here: the partitions the second one takes leave state behind
        until_hops(joined)
        with ServiceProcess(settings, "windower") as leaving:
            leaving.wait_ready()
            send(range(joined, cut))
            until_hops(cut)
            assert "restored session" in leaving.output, leaving.output[-6000:]
            assert leaving.terminate() == 0
        send(range(cut, 101))
        producer.close()
        hops = hops_reader.until(
            lambda got: len({(h.session_id, h.hop_seq) for h in got if h.is_final}) == len(streams), timeout_s=90
        )
        assert staying.terminate() == 0
    hops_reader.close()
    for session_id, session_hops in hops_by_session(hops).items():
        unique: dict[int, contracts.Hop] = {}
        for hop in session_hops:
            again = unique.setdefault(hop.hop_seq, hop)
            assert again.audio == hop.audio and again.window_start_sample == hop.window_start_sample
        assert len(unique) == len(session_hops), f"{session_id}: a hop was repeated"
        stream = next(s for s in streams if s.session_id == session_id)
        assert_hops_match(stream, [unique[seq] for seq in sorted(unique)], redelivered=True)
