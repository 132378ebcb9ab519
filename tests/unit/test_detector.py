"""The one-way audio detector under a fake clock, sample by sample."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.media.detector import Inbound, MediaSample, OneWayDetector, Outbound, Thresholds
from worker.media.levels import LevelWindow

STEP = 0.5  # the monitor samples twice a second


def run(detector: OneWayDetector, samples: list[MediaSample], t0: float = 0.0):
    """Feed samples STEP apart; return [(time, verdict)] for every change."""
    changes = []
    for i, s in enumerate(samples):
        now = t0 + (i + 1) * STEP
        v = detector.update(s, now)
        if v is not None:
            changes.append((now, v))
    return changes


def flowing(n: int, start: int = 0, *, nonzero: bool = True, sub: bool = True) -> list[MediaSample]:
    return [
        MediaSample(
            packets_received=start + 25 * (i + 1),
            audio_frames=5,
            peak=120 if nonzero else 1,
            outbound_subscribed=sub,
        )
        for i in range(n)
    ]


def first(changes, state) -> float | None:
    for t, v in changes:
        if v.inbound is state or v.outbound is state:
            return t
    return None


def test_good_call_is_ok_and_never_flagged() -> None:
    d = OneWayDetector(joined_at=0.0)
    changes = run(d, flowing(120))  # 60 s
    assert [v.inbound for _, v in changes] == [Inbound.OK]
    assert changes[0][0] == 2.0  # not before the settle time
    assert d.verdict.name == "ok"


def test_no_media_since_answer_flagged_within_5_s() -> None:
    d = OneWayDetector(joined_at=0.0)
    changes = run(d, [MediaSample(packets_received=0, outbound_subscribed=True)] * 20)
    t = first(changes, Inbound.MISSING)
    assert t is not None and t <= 5.0
    assert d.verdict.name == "no_inbound_media"


def test_no_stats_at_all_is_missing_too() -> None:
    d = OneWayDetector(joined_at=0.0)
    changes = run(d, [MediaSample(packets_received=None, outbound_subscribed=True)] * 12)
    assert first(changes, Inbound.MISSING) == 4.0


def test_mid_call_stop_flagged_within_8_s_and_recovers() -> None:
    d = OneWayDetector(joined_at=0.0)
    good = flowing(20)  # 10 s
    last = good[-1].packets_received
    stalled = [MediaSample(packets_received=last, audio_frames=5, outbound_subscribed=True)] * 16
    resumed = flowing(4, start=last or 0)
    changes = run(d, good + stalled + resumed)
    t = first(changes, Inbound.STOPPED)
    assert t is not None and t - 10.0 <= 8.0
    assert changes[-1][1].inbound is Inbound.OK  # media back: verdict back


def test_digital_silence_flagged_within_10_s() -> None:
    d = OneWayDetector(joined_at=0.0)
    changes = run(d, flowing(30, nonzero=False))
    t = first(changes, Inbound.SILENT)
    assert t is not None and t <= 10.0
    assert d.verdict.name == "inbound_digital_silence"


def test_zeros_mid_call_flagged_after_real_audio() -> None:
    d = OneWayDetector(joined_at=0.0)
    a = flowing(20)
    b = flowing(30, start=a[-1].packets_received or 0, nonzero=False)
    changes = run(d, a + b)
    t = first(changes, Inbound.SILENT)
    assert t is not None and 10.0 + 5.0 <= t <= 10.0 + 10.0


def test_a_short_gap_in_decoded_frames_does_not_restart_the_silence_count() -> None:
    """Regression (CI, monitor mode on a loaded machine): zeros were flagged
    12.6 s after they began instead of about 6.6 s; a poll window that got no
    decoded frames counted as audible and restarted the count."""
    d = OneWayDetector(joined_at=0.0)
    a = flowing(20)  # 10 s of real audio
    zeros = flowing(30, start=a[-1].packets_received or 0, nonzero=False)
    for i in (6, 7, 11):  # three windows without frames, at most 1 s in a row
        zeros[i] = MediaSample(zeros[i].packets_received, 0, 0, True)
    t = first(run(d, a + zeros), Inbound.SILENT)
    assert t is not None and t <= 10.0 + 6.5


def test_a_long_gap_in_decoded_frames_is_no_evidence_of_silence() -> None:
    d = OneWayDetector(joined_at=0.0)
    a = flowing(20)
    zeros = flowing(4, start=a[-1].packets_received or 0, nonzero=False)
    gap = [MediaSample(zeros[-1].packets_received, 0, 0, True)] * 10  # 5 s, no frames
    zeros2 = flowing(8, start=zeros[-1].packets_received or 0, nonzero=False)
    t = first(run(d, a + zeros + gap + zeros2), Inbound.SILENT)
    assert t is None  # 2 s + 4 s of zeros around a 5 s gap: never 6 s of evidence


def test_outbound_not_subscribed() -> None:
    d = OneWayDetector(joined_at=0.0)
    changes = run(d, flowing(20, sub=False))
    t = first(changes, Outbound.NOT_SUBSCRIBED)
    assert t == 5.0
    assert d.verdict.name == "outbound_not_subscribed"


def test_opus_residue_of_zeros_is_silence_but_quiet_noise_is_not() -> None:
    """Measured: G.711 zeros arrive as peaks of 1 LSB; -78 dBFS noise as 13+."""
    d = OneWayDetector(joined_at=0.0)
    samples = [MediaSample(25 * (i + 1), 5, 1, True) for i in range(30)]
    assert first(run(d, samples), Inbound.SILENT) is not None
    d2 = OneWayDetector(joined_at=0.0)
    samples = [MediaSample(25 * (i + 1), 5, 13, True) for i in range(120)]
    assert first(run(d2, samples), Inbound.SILENT) is None


def test_windows_without_frames_are_not_silence() -> None:
    d = OneWayDetector(joined_at=0.0)
    samples = [MediaSample(25 * (i + 1), 0, 0, True) for i in range(30)]
    assert first(run(d, samples), Inbound.SILENT) is None


def test_nothing_flagged_while_settling() -> None:
    d = OneWayDetector(joined_at=0.0, thresholds=Thresholds(settle_s=3.0))
    changes = run(d, [MediaSample(packets_received=0)] * 5)  # 2.5 s of nothing
    assert changes == []


def test_replaced_track_is_a_fresh_baseline_not_a_stop() -> None:
    """Defect 9b: a new caller track restarts its packet counter; its lower
    count is packets flowing on the new track, not 'no packets'."""
    d = OneWayDetector(joined_at=0.0)
    old = [MediaSample(25 * (i + 1), 5, 120, True, track_sid="TR_a") for i in range(40)]
    new = [MediaSample(25 * (i + 1), 5, 120, True, track_sid="TR_b") for i in range(40)]
    changes = run(d, old + new)  # 1000 packets, then a new track from 25
    assert first(changes, Inbound.STOPPED) is None
    assert d.verdict.inbound is Inbound.OK


def test_counter_going_backwards_is_a_fresh_baseline() -> None:
    """The caller's track is renegotiated: 3.5 s without a track, then a new
    one whose first read (25 packets, below the old 500) is packets flowing.
    Before the fix that read counted as "no new packet" and the call was
    flagged `stopped` at 14.0 s, with media_action=hangup a healthy caller."""
    d = OneWayDetector(joined_at=0.0)
    a = flowing(20)  # up to 500 at 10 s
    gap = [MediaSample(None, 0, 0, True)] * 7  # 10.5 .. 13.5 s: no caller track
    b = flowing(20)  # counting again from 25, from 14.0 s (no track sid given)
    assert first(run(d, a + gap + b), Inbound.STOPPED) is None
    assert d.verdict.inbound is Inbound.OK


def test_a_new_track_that_stays_at_zero_is_still_a_stop() -> None:
    d = OneWayDetector(joined_at=0.0)
    old = [MediaSample(25 * (i + 1), 5, 120, True, track_sid="TR_a") for i in range(20)]
    dead = [MediaSample(0, 0, 0, True, track_sid="TR_b")] * 16
    t = first(run(d, old + dead), Inbound.STOPPED)
    assert t is not None and t - 10.0 <= 4.5


def test_failed_stats_read_is_unknown_not_no_packets() -> None:
    """Defect 9c: a failed get_stats changes no timer and no verdict."""
    d = OneWayDetector(joined_at=0.0)
    good = flowing(20)  # 10 s
    failed = [MediaSample(None, 5, 120, True, stats_failed=True)] * 20  # 10 s unknown
    changes = run(d, good + failed)
    assert [v.inbound for _, v in changes] == [Inbound.OK]
    # and a failed read before any packet does not make "missing" either
    d2 = OneWayDetector(joined_at=0.0)
    assert run(d2, [MediaSample(None, stats_failed=True, outbound_subscribed=True)] * 20) == []


def test_failed_reads_then_a_read_without_growth_is_a_stop() -> None:
    """The counter is cumulative: a good read after failures that shows no new
    packet proves none came in the meantime."""
    d = OneWayDetector(joined_at=0.0)
    good = flowing(20)
    last = good[-1].packets_received
    failed = [MediaSample(None, stats_failed=True, outbound_subscribed=True)] * 10
    same = [MediaSample(last, 0, 0, True)]
    changes = run(d, good + failed + same)
    assert changes[-1][1].inbound is Inbound.STOPPED and changes[-1][0] == 15.5


def test_outbound_subscription_not_provably_the_callers_is_unknown() -> None:
    """Defect 9a (detector side): a subscription that cannot be attributed to
    the caller is neither ok nor flagged."""
    d = OneWayDetector(joined_at=0.0)
    samples = [
        MediaSample(25 * (i + 1), 5, 120, outbound_subscribed=None if i > 2 else False)
        for i in range(20)
    ]
    changes = run(d, samples)
    assert first(changes, Outbound.NOT_SUBSCRIBED) is None
    assert d.verdict.outbound is Outbound.UNKNOWN and d.verdict.name == "ok"
    d.update(MediaSample(1000, 5, 120, outbound_subscribed=True), 20.0)
    assert d.verdict.outbound is Outbound.OK  # confirmed later: ok, and it sticks
    d.update(MediaSample(1025, 5, 120, outbound_subscribed=None), 20.5)
    assert d.verdict.outbound is Outbound.OK


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 40), st.booleans(), st.booleans(), st.booleans()),
        min_size=1,
        max_size=200,
    )
)
def test_quiet_but_flowing_never_flagged(steps) -> None:
    """Any sequence where packets keep arriving with non-zero audio every
    sample (however low the level) is never flagged inbound."""
    d = OneWayDetector(joined_at=0.0)
    packets = 0
    for i, (inc, _a, _b, sub) in enumerate(steps):
        packets += inc + 1
        d.update(MediaSample(packets, 5, 13, sub), (i + 1) * STEP)  # -78 dBFS noise: 13 LSB
        assert d.verdict.inbound in (Inbound.PENDING, Inbound.OK)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(-5, 40),
            st.booleans(),
            st.sampled_from([False, None, True]),
            st.sampled_from(["TR_a", "TR_b", None]),
            st.booleans(),
        ),
        max_size=200,
    )
)
def test_any_sequence_never_raises(steps) -> None:
    d = OneWayDetector(joined_at=0.0)
    packets = 0
    for i, (inc, nz, sub, sid, failed) in enumerate(steps):
        packets = max(0, packets + inc)
        sample = MediaSample(
            packets if inc % 7 else None,
            5,
            50 if nz else 0,
            sub,
            track_sid=sid,
            stats_failed=failed and inc % 3 == 0,
        )
        d.update(sample, (i + 1) * STEP)
        assert d.verdict.name in (
            "ok",
            "pending",
            "no_inbound_media",
            "inbound_stopped",
            "inbound_digital_silence",
            "outbound_not_subscribed",
        )


def test_level_window() -> None:
    w = LevelWindow()
    w.add(np.zeros(160, np.int16))
    assert w.peak == 0 and w.rms_dbfs == -120.0
    w.add(np.full(160, 1, np.int16))  # the quietest possible non-zero sample
    assert w.peak == 1
    t = np.arange(1600) / 8000
    w2 = LevelWindow()
    w2.add((0.5 * 32767 * np.sin(2 * np.pi * 440 * t)).astype(np.int16))
    assert w2.rms_dbfs == pytest.approx(-9.03, abs=0.05)
    assert w2.peak_dbfs == pytest.approx(-6.02, abs=0.05)
