"""One-way audio detector: pure, fed with media samples and the time.

The monitor (monitor.py) samples the caller's track about twice a second:
the WebRTC inbound statistics (cumulative packet count) and what the decoded
audio looked like since the previous sample (any frames, any non-zero
sample). This module turns that sequence into verdicts with reasons:

    inbound:  ok | missing | stopped | silent        (pending before it knows)
    outbound: ok | not_subscribed | unknown          (pending before it knows)

- missing:  no inbound packet since the caller joined, for `missing_after_s`;
- stopped:  packets flowed, then none for `stopped_after_s`;
- silent:   packets flow but the decoded audio stays at digital silence for
            `silence_after_s` (a muted trunk, a codec mismatch). A sample
            window without decoded frames is no evidence either way: for up to
            `frame_gap_s` it leaves the silence timer alone (a busy machine
            can delay frame delivery by a poll or two, which must not restart
            the count); a longer gap restarts it (no frames, no judgement). Measured on
            the stack: G.711 zeros from the caller reach the room through
            livekit-sip's Opus leg as +-1 LSB at 8 kHz (not exact zeros), while
            the quietest live line tried (-78 dBFS noise) peaks at 13 LSB or
            more. So "digital silence" is a window peak of at most
            `silence_peak_lsb` (4 LSB, about -78 dBFS), and a quiet caller
            is never "silent";
- not_subscribed: the SIP participant has not subscribed to our hold track
            `outbound_after_s` after joining, so the caller hears nothing;
- unknown:  the hold track was subscribed, but not provably by the caller (the
            SDK reports only that a track got its first subscriber, not who;
            see monitor.py): never flagged, never confirmed.

Nothing is flagged during `settle_s` after the caller joined, while the media
path is still being set up. A verdict goes back to ok as soon as media does.

The packet count is cumulative per track. A count that goes backwards or a new
track sid (the caller's track replaced) starts a fresh baseline: packets seen
on the new track count as flowing, and its lower count is not read as "no
packets". A sample whose statistics could not be read (`stats_failed`) is
unknown: it changes no timer and no verdict (its audio levels still count).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Inbound(StrEnum):
    PENDING = "pending"
    OK = "ok"
    MISSING = "missing"
    STOPPED = "stopped"
    SILENT = "silent"


class Outbound(StrEnum):
    PENDING = "pending"
    OK = "ok"
    NOT_SUBSCRIBED = "not_subscribed"
    UNKNOWN = "unknown"  # subscribed, but not provably by the caller


# The verdict names used in logs, data messages and metrics.
VERDICT_NAMES = {
    Inbound.OK: "ok",
    Inbound.MISSING: "no_inbound_media",
    Inbound.STOPPED: "inbound_stopped",
    Inbound.SILENT: "inbound_digital_silence",
    Outbound.NOT_SUBSCRIBED: "outbound_not_subscribed",
}


@dataclass(frozen=True)
class Thresholds:
    settle_s: float = 2.0
    missing_after_s: float = 4.0
    stopped_after_s: float = 4.0
    silence_after_s: float = 6.0
    outbound_after_s: float = 5.0
    silence_peak_lsb: int = 4  # 16-bit at 8 kHz; see "silent" above
    frame_gap_s: float = 2.0  # windows without frames this long: not silence


@dataclass(frozen=True)
class MediaSample:
    """What the monitor saw since its previous sample."""

    packets_received: int | None  # cumulative inbound RTP packets; None: no stats yet
    audio_frames: int = 0  # decoded frames since the previous sample
    peak: int = 0  # largest |sample| (16-bit, 8 kHz) in those frames
    # True: the SIP participant subscribed to our track; None: someone did,
    # but it cannot be told whether it was the caller; False: nobody yet.
    outbound_subscribed: bool | None = False
    track_sid: str | None = None  # the caller's track the packet count is from
    stats_failed: bool = False  # the statistics read failed: packet count unknown


@dataclass(frozen=True)
class Verdict:
    inbound: Inbound
    outbound: Outbound
    reason: str

    @property
    def name(self) -> str:
        """The most important non-ok verdict, or ok/pending."""
        if self.inbound in (Inbound.MISSING, Inbound.STOPPED, Inbound.SILENT):
            return VERDICT_NAMES[self.inbound]
        if self.outbound is Outbound.NOT_SUBSCRIBED:
            return VERDICT_NAMES[self.outbound]
        return "ok" if self.inbound is Inbound.OK else "pending"


@dataclass
class OneWayDetector:
    joined_at: float  # when the caller's SIP participant joined (answer)
    thresholds: Thresholds = field(default_factory=Thresholds)
    _last_packets: int | None = None
    _last_sid: str | None = None  # the track _last_packets counts on
    _last_packet_at: float | None = None  # when the packet count last grew
    _first_packet_at: float | None = None
    _last_audible_at: float | None = None
    _last_frames_at: float | None = None  # the last window with decoded frames
    _subscribed: bool = False
    _subscribed_unknown: bool = False
    verdict: Verdict = field(
        default_factory=lambda: Verdict(Inbound.PENDING, Outbound.PENDING, "settling")
    )

    def update(self, sample: MediaSample, now: float) -> Verdict | None:
        """Feed one sample; returns the new verdict if it changed, else None."""
        # A window without frames says nothing about silence: a short gap
        # leaves the timer alone, a long one restarts it (module docstring).
        if sample.audio_frames:
            self._last_frames_at = now
            if sample.peak > self.thresholds.silence_peak_lsb:
                self._last_audible_at = now
        elif (
            self._last_frames_at is None or now - self._last_frames_at > self.thresholds.frame_gap_s
        ):
            self._last_audible_at = now
        if sample.outbound_subscribed is True:
            self._subscribed = True
        elif sample.outbound_subscribed is None:
            self._subscribed_unknown = True
        if sample.stats_failed:
            return None  # unknown: keep the judgement, move no timer
        n = sample.packets_received
        if n is not None:
            fresh = (
                self._last_packets is None
                or n < self._last_packets  # the counter restarted
                or (sample.track_sid is not None and sample.track_sid != self._last_sid)
            )
            if (fresh or n > (self._last_packets or 0)) and n > 0:
                self._last_packet_at = now
                if self._first_packet_at is None:
                    self._first_packet_at = now
            self._last_packets = n
            self._last_sid = sample.track_sid
        new = self._judge(now)
        # a change of state, not of wording ("for 4.5 s" -> "for 5.0 s")
        if (new.inbound, new.outbound) != (self.verdict.inbound, self.verdict.outbound):
            self.verdict = new
            return new
        return None

    def _judge(self, now: float) -> Verdict:
        t = self.thresholds
        since_join = now - self.joined_at
        if since_join < t.settle_s:
            return Verdict(Inbound.PENDING, Outbound.PENDING, "settling")

        if self._first_packet_at is None:
            if since_join >= t.missing_after_s:
                inbound, why = Inbound.MISSING, f"no inbound RTP in {since_join:.1f} s since answer"
            else:
                inbound, why = Inbound.PENDING, "waiting for the first inbound packet"
        else:
            assert self._last_packet_at is not None
            quiet_for = now - self._last_packet_at
            heard = self._last_audible_at
            zeros_for = now - max(heard if heard is not None else 0.0, self._first_packet_at)
            if quiet_for >= t.stopped_after_s:
                inbound, why = Inbound.STOPPED, f"no inbound RTP for {quiet_for:.1f} s"
            elif zeros_for >= t.silence_after_s:
                inbound, why = (
                    Inbound.SILENT,
                    f"inbound RTP decodes to digital silence for {zeros_for:.1f} s",
                )
            else:
                inbound, why = Inbound.OK, "inbound audio flowing"

        if self._subscribed:
            outbound = Outbound.OK
        elif self._subscribed_unknown:
            outbound = Outbound.UNKNOWN
            why += "; the hold track was subscribed, but not provably by the caller"
        elif since_join >= t.outbound_after_s:
            outbound = Outbound.NOT_SUBSCRIBED
            why += f"; the caller has not subscribed to the hold audio in {since_join:.1f} s"
        else:
            outbound = Outbound.PENDING
        return Verdict(inbound, outbound, why)
