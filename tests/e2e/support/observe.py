"""An observer in a call room: what a room participant sees of the caller's audio.

It joins the room as an ordinary livekit.rtc participant (own room-scoped
token, identity ``observer-...``), subscribes to the SIP participant's audio
track and, every ``interval_s`` (0.5 s), records one sample:

- the WebRTC inbound-rtp statistics of that track (``track.get_stats()``,
  the ``inbound_rtp`` entry): cumulative packets_received, packets_lost,
  jitter, bytes_received, concealed_samples, silent_concealed_samples,
  concealment_events, total_samples_received, total_samples_duration,
  audio_level, total_audio_energy, jitter_buffer_emitted_count, ...
  (``STAT_FIELDS``; a field missing from the proto is skipped);
- what an ``rtc.AudioStream`` of that track delivered since the previous
  sample: frames, samples, RMS and peak in dBFS, frames that were exact
  digital zero / had any non-zero sample.

Room events (participants, tracks, SIP attributes, our own track being
subscribed) are recorded with the same clock. Times: ``mono`` is
time.monotonic() (CLOCK_MONOTONIC, comparable with the SIP caller's
``events.*.mono`` in another process), ``wall`` is time.time().

Optionally it publishes a tone (``publish_tone_hz``): livekit-sip does not
answer an inbound call until the SIP participant has subscribed to some audio
track in the room, so without a hold worker the observer's tone is what gets
the call answered; ``local_track_subscribed`` marks when that happened.

CLI (run inside the stack's network namespace; LIVEKIT_* from devstack/env.sh)::

    python -m tests.e2e.support.observe --caller-number +15551230001 \\
        --duration 25 --json timeline.json [--room call-...] [--publish-tone 440] \\
        [--sample-rate 16000] [--interval 0.5] [--dump-stats]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import secrets
import sys
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import numpy as np
from livekit import api, rtc

# inbound-rtp fields recorded (livekit.rtc stats proto, v1.x):
#   received.{packets_received, packets_lost, jitter}
#   inbound.{...}: the rest
RECEIVED_FIELDS = ("packets_received", "packets_lost", "jitter")
INBOUND_FIELDS = (
    "bytes_received",
    "header_bytes_received",
    "packets_discarded",
    "last_packet_received_timestamp",
    "total_samples_received",
    "concealed_samples",
    "silent_concealed_samples",
    "concealment_events",
    "inserted_samples_for_deceleration",
    "removed_samples_for_acceleration",
    "audio_level",
    "total_audio_energy",
    "total_samples_duration",
    "jitter_buffer_delay",
    "jitter_buffer_emitted_count",
    "jitter_buffer_target_delay",
    "jitter_buffer_minimum_delay",
    "estimated_playout_timestamp",
    "fec_packets_received",
    "nack_count",
)
STAT_FIELDS = RECEIVED_FIELDS + INBOUND_FIELDS
FLOOR_DBFS = -120.0


def observer_token(key: str, secret: str, room: str, identity: str, ttl_s: int = 600) -> str:
    return (
        api.AccessToken(key, secret)
        .with_identity(identity)
        .with_name(identity)
        .with_kind("standard")
        .with_ttl(timedelta(seconds=ttl_s))
        .with_grants(
            api.VideoGrants(room_join=True, room=room, can_publish=True, can_subscribe=True)
        )
        .to_jwt()
    )


def inbound_rtp_stats(stats: list[Any]) -> dict[str, Any] | None:
    """The STAT_FIELDS of the first inbound-rtp entry of ``track.get_stats()``."""
    for s in stats:
        if not s.HasField("inbound_rtp"):
            continue
        ib = s.inbound_rtp
        out: dict[str, Any] = {"timestamp": ib.rtc.timestamp, "ssrc": ib.stream.ssrc}
        for name in RECEIVED_FIELDS:
            if hasattr(ib.received, name):
                out[name] = getattr(ib.received, name)
        for name in INBOUND_FIELDS:
            if hasattr(ib.inbound, name):
                out[name] = getattr(ib.inbound, name)
        return out
    return None


@dataclass
class _AudioWindow:
    frames: int = 0
    samples: int = 0
    zero_frames: int = 0
    nonzero_frames: int = 0
    nonzero_samples: int = 0
    peak: int = 0
    sum_sq: float = 0.0

    def add(self, pcm: np.ndarray) -> None:
        self.frames += 1
        self.samples += int(pcm.size)
        x = pcm.astype(np.int64)
        peak = int(np.max(np.abs(x))) if x.size else 0
        nz = int(np.count_nonzero(x))
        self.nonzero_samples += nz
        if peak:
            self.nonzero_frames += 1
            self.peak = max(self.peak, peak)
            self.sum_sq += float(np.dot(x, x))
        else:
            self.zero_frames += 1

    def summary(self) -> dict[str, Any]:
        rms = math.sqrt(self.sum_sq / self.samples) / 32768.0 if self.samples else 0.0
        return {
            "frames": self.frames,
            "samples": self.samples,
            "zero_frames": self.zero_frames,
            "nonzero_frames": self.nonzero_frames,
            "nonzero_samples": self.nonzero_samples,
            "rms_dbfs": round(max(20 * math.log10(rms), FLOOR_DBFS), 1) if rms else FLOOR_DBFS,
            "peak": self.peak,
            "peak_dbfs": (
                round(max(20 * math.log10(self.peak / 32768.0), FLOOR_DBFS), 1)
                if self.peak
                else FLOOR_DBFS
            ),
        }


@dataclass
class CallObserver:
    url: str
    key: str
    secret: str
    room_name: str
    identity: str = field(default_factory=lambda: f"observer-{secrets.token_hex(3)}")
    sample_rate: int = 16000
    frame_size_ms: int = 100
    interval_s: float = 0.5
    publish_tone_hz: float | None = None
    dump_stats: bool = False  # print the first full stats list (field names)
    record_path: str | None = None  # write what the AudioStream delivered (WAV)

    def __post_init__(self) -> None:
        self.room = rtc.Room()
        self.timeline: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.t0 = time.monotonic()
        self.sip_identity: str | None = None
        self._track: rtc.RemoteAudioTrack | None = None
        self._win = _AudioWindow()
        self._first_frame_mono: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._dumped = False
        self._stop = asyncio.Event()
        self._pcm: list[np.ndarray] = []

    # ------------------------------------------------------------------ events
    def _event(self, what: str, **info: Any) -> None:
        now = time.monotonic()
        self.events.append(
            {"t": round(now - self.t0, 3), "mono": now, "wall": time.time(), "event": what, **info}
        )

    def _is_sip(self, p: rtc.RemoteParticipant) -> bool:
        return bool(p.kind == rtc.ParticipantKind.PARTICIPANT_KIND_SIP)

    def _wire(self) -> None:
        r = self.room

        @r.on("participant_connected")
        def _pc(p: rtc.RemoteParticipant) -> None:
            self._event("participant_connected", identity=p.identity, kind=int(p.kind))

        @r.on("participant_disconnected")
        def _pd(p: rtc.RemoteParticipant) -> None:
            self._event(
                "participant_disconnected",
                identity=p.identity,
                kind=int(p.kind),
                reason=int(getattr(p, "disconnect_reason", 0) or 0),
                attributes=dict(p.attributes),
            )

        @r.on("participant_attributes_changed")
        def _pa(changed: dict[str, str], p: rtc.Participant) -> None:
            self._event("attributes_changed", identity=p.identity, changed=dict(changed))

        @r.on("track_published")
        def _tp(pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
            self._event("track_published", identity=p.identity, track=pub.sid, kind=int(pub.kind))

        @r.on("track_unpublished")
        def _tu(pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant) -> None:
            self._event("track_unpublished", identity=p.identity, track=pub.sid)

        @r.on("track_subscribed")
        def _ts(
            track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            self._event("track_subscribed", identity=p.identity, track=pub.sid)
            self._maybe_attach(track, p)

        @r.on("track_unsubscribed")
        def _tus(
            track: rtc.Track, pub: rtc.RemoteTrackPublication, p: rtc.RemoteParticipant
        ) -> None:
            self._event("track_unsubscribed", identity=p.identity, track=pub.sid)

        @r.on("track_muted")
        def _tm(p: rtc.Participant, pub: rtc.TrackPublication) -> None:
            self._event("track_muted", identity=p.identity, track=pub.sid)

        @r.on("track_unmuted")
        def _tum(p: rtc.Participant, pub: rtc.TrackPublication) -> None:
            self._event("track_unmuted", identity=p.identity, track=pub.sid)

        @r.on("local_track_published")
        def _ltp(pub: rtc.LocalTrackPublication, track: rtc.Track) -> None:
            self._event("local_track_published", track=pub.sid)

        @r.on("local_track_subscribed")
        def _lts(track: rtc.Track) -> None:
            self._event("local_track_subscribed", track=track.sid)

        @r.on("disconnected")
        def _d(reason: Any) -> None:
            self._event("disconnected", reason=int(reason) if reason is not None else None)

    def _maybe_attach(self, track: rtc.Track, p: rtc.RemoteParticipant) -> None:
        if (
            self._track is None
            and self._is_sip(p)
            and track.kind == rtc.TrackKind.KIND_AUDIO
            and isinstance(track, rtc.RemoteAudioTrack)
        ):
            self._track = track
            self.sip_identity = p.identity
            self._tasks.append(asyncio.create_task(self._read_audio(track)))

    # ------------------------------------------------------------------- media
    async def _read_audio(self, track: rtc.RemoteAudioTrack) -> None:
        stream = rtc.AudioStream.from_track(
            track=track,
            sample_rate=self.sample_rate,
            num_channels=1,
            frame_size_ms=self.frame_size_ms,
        )
        try:
            async for ev in stream:
                pcm = np.frombuffer(ev.frame.data, dtype=np.int16)
                if self._first_frame_mono is None:
                    self._first_frame_mono = time.monotonic()
                    self._event("first_audio_frame", samples=int(pcm.size))
                self._win.add(pcm)
                if self.record_path:
                    self._pcm.append(pcm.copy())
        finally:
            await stream.aclose()

    async def _sample_loop(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            next_at += self.interval_s
            with contextlib.suppress(asyncio.TimeoutError, TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, next_at - time.monotonic()))
            await self._sample()

    async def _sample(self) -> None:
        now = time.monotonic()
        win, self._win = self._win, _AudioWindow()
        stats: dict[str, Any] | None = None
        err = None
        if self._track is not None:
            try:
                raw = await asyncio.wait_for(self._track.get_stats(), 2.0)
                if self.dump_stats and not self._dumped and raw:
                    self._dumped = True
                    print("---- track.get_stats() (first) ----", file=sys.stderr)
                    for s in raw:
                        print(s, file=sys.stderr)
                    print("----", file=sys.stderr)
                stats = inbound_rtp_stats(raw)
            except Exception as exc:  # track gone, FFI timeout
                err = repr(exc)
        sip = [p for p in self.room.remote_participants.values() if self._is_sip(p)]
        self.timeline.append(
            {
                "t": round(now - self.t0, 3),
                "mono": now,
                "wall": time.time(),
                "sip_present": bool(sip),
                "sip_call_status": sip[0].attributes.get("sip.callStatus") if sip else None,
                "track": self._track.sid if self._track is not None else None,
                "stats": stats,
                "stats_error": err,
                "audio": win.summary(),
            }
        )

    # -------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        self.t0 = time.monotonic()
        self._wire()
        await self.room.connect(
            self.url, observer_token(self.key, self.secret, self.room_name, self.identity)
        )
        self._event("connected", room=self.room_name, identity=self.identity)
        for p in self.room.remote_participants.values():
            self._event("present", identity=p.identity, kind=int(p.kind))
            for pub in p.track_publications.values():
                if pub.track is not None:
                    self._maybe_attach(pub.track, p)
        if self.publish_tone_hz:
            await self._publish_tone(self.publish_tone_hz)
        self._tasks.append(asyncio.create_task(self._sample_loop()))

    async def _publish_tone(self, hz: float) -> None:
        rate, n = 48_000, 960  # 20 ms
        source = rtc.AudioSource(rate, 1, queue_size_ms=100)
        track = rtc.LocalAudioTrack.create_audio_track("observer-tone", source)
        await self.room.local_participant.publish_track(
            track, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE)
        )

        async def push() -> None:
            k = 0
            while True:
                t = (np.arange(n) + k * n) / rate
                pcm = (0.1 * np.sin(2 * np.pi * hz * t) * 32767).astype(np.int16)
                await source.capture_frame(rtc.AudioFrame(pcm.tobytes(), rate, 1, n))
                k += 1

        self._tasks.append(asyncio.create_task(push()))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.sleep(0)
        for t in self._tasks:
            t.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=3.0)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.room.disconnect(), 5.0)
        if self.record_path:
            import soundfile as sf

            pcm = np.concatenate(self._pcm) if self._pcm else np.zeros(0, np.int16)
            sf.write(self.record_path, pcm, self.sample_rate, subtype="PCM_16")

    # ---------------------------------------------------------------- reports
    def to_dict(self) -> dict[str, Any]:
        return {
            "room": self.room_name,
            "identity": self.identity,
            "sip_identity": self.sip_identity,
            "t0_mono": self.t0,
            "sample_rate": self.sample_rate,
            "frame_size_ms": self.frame_size_ms,
            "interval_s": self.interval_s,
            "first_frame_mono": self._first_frame_mono,
            "record_path": self.record_path,
            "events": self.events,
            "timeline": self.timeline,
        }

    def write_json(self, path: str) -> None:
        tmp = f"{path}.tmp.{os.getpid()}"
        with open(tmp, "w") as fh:
            json.dump(self.to_dict(), fh, indent=1)
        os.replace(tmp, path)


def format_table(data: dict[str, Any], ref_mono: float | None = None) -> str:
    """One line per sample with per-interval deltas; ``t`` is relative to
    ``ref_mono`` (e.g. the caller's 200 OK) if given, else to the observer's start."""
    t0 = ref_mono if ref_mono is not None else data["t0_mono"]
    head = (
        f"{'t':>6} {'pkts':>6} {'dpk':>4} {'lost':>4} {'jit':>6} {'conc':>7} {'dconc':>6} "
        f"{'silc':>7} {'cev':>4} {'tsr':>8} {'dtsr':>6} {'lvl':>6} {'energy':>9} "
        f"{'fr':>3} {'zfr':>3} {'rms':>6} {'peak':>6}  status"
    )
    lines = [head]
    prev: dict[str, Any] = {}
    for s in data["timeline"]:
        st = s.get("stats") or {}
        a = s["audio"]

        def d(name: str, st: dict[str, Any] = st, prev: dict[str, Any] = prev) -> str:
            if name not in st:
                return "-"
            v = st[name] - prev.get(name, 0)
            return f"{v:.0f}"

        def g(name: str, fmt: str, st: dict[str, Any] = st) -> str:
            return format(st[name], fmt) if name in st else "-"

        lines.append(
            f"{s['mono'] - t0:6.1f} {g('packets_received', 'd'):>6} {d('packets_received'):>4} "
            f"{g('packets_lost', 'd'):>4} {g('jitter', '.4f'):>6} "
            f"{g('concealed_samples', 'd'):>7} {d('concealed_samples'):>6} "
            f"{g('silent_concealed_samples', 'd'):>7} {g('concealment_events', 'd'):>4} "
            f"{g('total_samples_received', 'd'):>8} {d('total_samples_received'):>6} "
            f"{g('audio_level', '.4f'):>6} {g('total_audio_energy', '.5f'):>9} "
            f"{a['frames']:>3} {a['zero_frames']:>3} {a['rms_dbfs']:>6.1f} {a['peak_dbfs']:>6.1f}"
            f"  {s.get('sip_call_status') or ('-' if s['sip_present'] else 'gone')}"
        )
        prev = st or prev
    return "\n".join(lines)


async def find_room_of_caller(lk: api.LiveKitAPI, caller_number: str, timeout: float = 20.0) -> str:
    """The call-* room whose SIP participant has sip.phoneNumber == caller_number."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in (await lk.room.list_rooms(api.ListRoomsRequest())).rooms:
            parts = (
                await lk.room.list_participants(api.ListParticipantsRequest(room=r.name))
            ).participants
            if any(
                p.kind == api.ParticipantInfo.Kind.SIP
                and p.attributes.get("sip.phoneNumber") == caller_number
                for p in parts
            ):
                return str(r.name)
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no room with a SIP participant from {caller_number} in {timeout} s")


async def observe(
    *,
    url: str,
    key: str,
    secret: str,
    duration_s: float,
    room: str | None = None,
    caller_number: str | None = None,
    publish_tone_hz: float | None = None,
    sample_rate: int = 16000,
    interval_s: float = 0.5,
    dump_stats: bool = False,
    until_sip_gone_s: float | None = 3.0,
    record_path: str | None = None,
) -> CallObserver:
    """Find the room (or use ``room``), observe for ``duration_s``; ends early
    ``until_sip_gone_s`` after the SIP participant left (None: never)."""
    if room is None:
        if not caller_number:
            raise ValueError("need room or caller_number")
        lk = api.LiveKitAPI(url.replace("ws", "http", 1), key, secret)
        try:
            room = await find_room_of_caller(lk, caller_number)
        finally:
            await lk.aclose()
    obs = CallObserver(
        url,
        key,
        secret,
        room,
        publish_tone_hz=publish_tone_hz,
        sample_rate=sample_rate,
        interval_s=interval_s,
        dump_stats=dump_stats,
        record_path=record_path,
    )
    await obs.start()
    try:
        end = time.monotonic() + duration_s
        gone_at = None
        while time.monotonic() < end:
            await asyncio.sleep(0.1)
            left = any(
                e["event"] == "participant_disconnected" and e["identity"] == obs.sip_identity
                for e in obs.events
            )
            if left and until_sip_gone_s is not None:
                gone_at = gone_at or time.monotonic()
                if time.monotonic() - gone_at >= until_sip_gone_s:
                    break
    finally:
        await obs.stop()
    return obs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.e2e.support.observe")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--room")
    g.add_argument("--caller-number", help="find the call-* room of this caller")
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--json", required=True, help="timeline output")
    p.add_argument("--publish-tone", type=float, default=None, metavar="HZ")
    p.add_argument("--sample-rate", type=int, default=16000)
    p.add_argument("--interval", type=float, default=0.5)
    p.add_argument("--dump-stats", action="store_true")
    p.add_argument("--record", default=None, help="WAV of what the AudioStream delivered")
    p.add_argument("--ref-mono", type=float, default=None, help="table time origin (monotonic)")
    a = p.parse_args(argv)
    obs = asyncio.run(
        observe(
            url=os.environ["LIVEKIT_URL"],
            key=os.environ["LIVEKIT_API_KEY"],
            secret=os.environ["LIVEKIT_API_SECRET"],
            duration_s=a.duration,
            room=a.room,
            caller_number=a.caller_number,
            publish_tone_hz=a.publish_tone,
            sample_rate=a.sample_rate,
            interval_s=a.interval,
            dump_stats=a.dump_stats,
            record_path=a.record,
        )
    )
    obs.write_json(a.json)
    print(format_table(obs.to_dict(), a.ref_mono))
    return 0


if __name__ == "__main__":
    sys.exit(main())
