"""Self-test of the media-fault tooling, without the LiveKit stack:
sip_caller (``--rtp-port``, ``--rtp-stop-after``, ``--mute-after``, VAD off)
against sip_answerer over loopback, and ``faults.RtpBlock`` (nftables).

The RtpBlock tests need root and the ``nft`` binary (devstack/install.sh
installs the ``nftables`` package); they skip without them. Run inside a
network namespace (``make test`` does), the rules live in that namespace only.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from harness import analysis  # noqa: E402
from tests.e2e.support import faults  # noqa: E402
from tests.integration.test_sip_caller_loopback import (  # noqa: E402
    Answerer,
    _pjsua2_required,  # noqa: F401 - the module's autouse fixture
    run_caller,
)

PKTS_PER_S = 50  # 20 ms ptime


def _nft_or_skip() -> None:
    # `make test` installs nftables and runs as root (as CI does): a missing
    # prerequisite is a failure to report, not a test to skip silently.
    if os.geteuid() != 0:
        pytest.fail("RtpBlock needs root (nftables): run the tests as root, as `make test` does")
    why = faults.nft_available()
    if why:
        pytest.fail(f"nft unusable here: {why} (devstack/install.sh installs nftables)")


def _tx_at(res: dict, mono: float) -> int:
    """The caller's cumulative RTP tx count at the last sample <= mono."""
    before = [tx for t, tx, _ in res["rtp"]["timeline"] if t <= mono]
    return before[-1] if before else 0


def test_rtp_port_and_no_vad_on_all_zero_audio(tmp_path: Path) -> None:
    """A fixed RTP port is used and reported; an all-zero WAV still goes out as
    one RTP packet every 20 ms (no VAD / silence suppression)."""
    zeros = analysis.write_silence_wav(str(tmp_path / "zeros.wav"), 1.0)
    port = faults.free_rtp_port()
    ans = Answerer(tmp_path, "--record", str(tmp_path / "answerer_heard.wav"))
    proc, res, _ = run_caller(tmp_path, ans.port, zeros, "--duration", "3", "--rtp-port", str(port))
    a = ans.finish()
    assert proc.returncode == 0, proc.stderr
    assert res["errors"] == [], res["errors"]
    assert res["rtp_port"] == port and res["rtp"]["local"] == f"127.0.0.1:{port}"
    assert res["rtp"]["requested_port"] == port and res["rtp"]["vad"] is False
    span = res["events"]["hangup"]["mono"] - res["events"]["media_active"]["mono"]
    assert res["rtp"]["tx_packets"] >= 0.9 * PKTS_PER_S * span, (res["rtp"], span)
    heard, _ = analysis.read_wav(a["calls"][0]["recording"]["path"])
    assert heard.size and not heard.any(), "all-zero WAV must arrive as exact zeros"


def test_default_rtp_port_is_random_and_reported(tmp_path: Path) -> None:
    tone = analysis.write_tone_wav(str(tmp_path / "t.wav"), 440.0, 1.0)
    ans = Answerer(tmp_path)
    proc, res, _ = run_caller(tmp_path, ans.port, tone, "--duration", "1")
    ans.finish()
    assert proc.returncode == 0, proc.stderr
    assert res["rtp"]["requested_port"] is None
    assert 20000 <= res["rtp_port"] < 50000 and res["rtp_port"] % 2 == 0


def test_rtp_stop_after_stops_sending(tmp_path: Path) -> None:
    tone = analysis.write_tone_wav(str(tmp_path / "t.wav"), 440.0, 1.0)
    ans = Answerer(tmp_path)
    proc, res, _ = run_caller(tmp_path, ans.port, tone, "--duration", "3", "--rtp-stop-after", "1")
    ans.finish()
    assert proc.returncode == 0, proc.stderr
    assert res["errors"] == [], res["errors"]
    ev = res["events"]
    assert 0.95 < ev["rtp_stopped"]["mono"] - ev["answered"]["mono"] < 1.2
    at_stop = _tx_at(res, ev["rtp_stopped"]["mono"] + 0.1)
    assert res["rtp"]["tx_packets"] - at_stop <= 2, (at_stop, res["rtp"]["tx_packets"])
    assert res["hangup_by"] == "local"  # SIP stayed up: no re-INVITE, no BYE from us early


def test_mute_after_sends_exact_zeros(tmp_path: Path) -> None:
    tone = analysis.write_tone_wav(str(tmp_path / "t.wav"), 440.0, 1.0)
    ans = Answerer(tmp_path, "--record", str(tmp_path / "answerer_heard.wav"))
    proc, res, _ = run_caller(tmp_path, ans.port, tone, "--duration", "3", "--mute-after", "1")
    a = ans.finish()
    assert proc.returncode == 0, proc.stderr
    ev = res["events"]
    call = a["calls"][0]
    heard, rate = analysis.read_wav(call["recording"]["path"])
    rec_t0 = call["recording"]["started"]["mono"]
    muted_at = ev["muted"]["mono"] - rec_t0
    before = heard[int((muted_at - 0.6) * rate) : int((muted_at - 0.1) * rate)]
    after = heard[int((muted_at + 0.3) * rate) : int((muted_at + 1.5) * rate)]
    assert np.sqrt(np.mean(before**2)) > 0.01  # the tone
    assert after.size and not after.any(), "after --mute-after: exact zeros"
    span = ev["hangup"]["mono"] - ev["muted"]["mono"]
    sent = res["rtp"]["tx_packets"] - _tx_at(res, ev["muted"]["mono"])
    assert sent >= 0.9 * PKTS_PER_S * span, (sent, span)  # still sending


def test_rtp_block_drops_udp_and_cleans_up() -> None:
    _nft_or_skip()
    port = faults.free_rtp_port()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx.bind(("127.0.0.1", port))
    rx.settimeout(0.2)

    def burst(n: int = 10) -> int:
        for _ in range(n):
            tx.sendto(b"\x80" * 172, rx.getsockname())  # never EPERM: dropped on input
        got = 0
        try:
            while True:
                rx.recv(2048)
                got += 1
        except TimeoutError:
            return got

    try:
        assert burst() == 10
        with faults.RtpBlock(src_port=port) as blk:
            assert blk.table in faults.fault_tables()
            assert burst() == 0
            assert blk.dropped() == 10
        assert blk.table not in faults.fault_tables()
        assert blk.dropped() == 10 and burst() == 10
        with pytest.raises(KeyError), faults.RtpBlock(dst_ports=rx.getsockname()[1]) as blk2:
            assert burst() == 0
            raise KeyError("the table must go even on error")
        assert blk2.table not in faults.fault_tables()
    finally:
        rx.close()
        tx.close()


def test_rtp_block_on_a_call(tmp_path: Path) -> None:
    """Blocking the caller's RTP port before the INVITE: the caller sends as
    usual, nothing arrives at the far end, every packet is counted as dropped."""
    _nft_or_skip()
    tone = analysis.write_tone_wav(str(tmp_path / "t.wav"), 440.0, 1.0)
    port = faults.free_rtp_port()
    ans = Answerer(tmp_path, "--record", str(tmp_path / "answerer_heard.wav"))
    with faults.RtpBlock(src_port=port) as blk:
        proc, res, _ = run_caller(
            tmp_path, ans.port, tone, "--duration", "2", "--rtp-port", str(port)
        )
    a = ans.finish()
    assert proc.returncode == 0, proc.stderr
    assert res["rtp_port"] == port and res["rtp"]["tx_packets"] >= 80
    assert blk.dropped() >= res["rtp"]["tx_packets"]
    heard, _ = analysis.read_wav(a["calls"][0]["recording"]["path"])
    assert np.max(np.abs(heard), initial=0.0) < 1e-3, "nothing of the tone may arrive"
