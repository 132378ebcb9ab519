"""Real media faults for the SIP end-to-end tests: RTP that is sent but never arrives.

``RtpBlock`` installs an nftables rule that drops the caller's RTP in the
kernel on the receiving side (``input`` hook): pjsua sends every packet
without error (it counts them in its stream statistics; a drop in the
``output`` hook would fail its sendto() with EPERM, which a real network never
does) and livekit-sip's socket never sees them. It acts on the network
namespace of the calling process: run the tests with ``ip netns exec NAME``
(as ``make test`` does) and the rule lives in that namespace only; on the host
it acts on the host's loopback traffic. Needs root (CAP_NET_ADMIN) and the
``nft`` binary (Debian package ``nftables``, installed by devstack/install.sh).

Every block gets its own table (``inet holdfaults_<pid>_<n>``), so concurrent
blocks (several calls in one test, several test processes) never remove each
other's rules; ``stop()`` deletes the table, and so does leaving the ``with``
block, an exception included. ``cleanup_stale()`` removes tables left behind by
processes that died (for a session fixture).

    with RtpBlock(src_port=res_rtp_port):             # the caller's RTP port
        ...
    blk = RtpBlock(dst_ports=(51000, 51100)).start()  # everything to livekit-sip
    ...
    blk.dropped()  # packets dropped so far (nft counter)
    blk.stop()

Pick a fixed caller RTP port with ``free_rtp_port()`` and pass it to the SIP
caller with ``--rtp-port``, so the block can be in place before the INVITE.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import time
from types import TracebackType

TABLE_PREFIX = "holdfaults_"
LIVEKIT_SIP_RTP_PORTS = (51000, 51100)  # devstack/versions.env SIP_RTP_PORT_*
_seq = itertools.count(1)


class FaultToolError(RuntimeError):
    pass


def nft_path() -> str:
    path = shutil.which("nft") or next(
        (p for p in ("/usr/sbin/nft", "/sbin/nft") if os.access(p, os.X_OK)), None
    )
    if not path:
        raise FaultToolError("nft not found: run devstack/install.sh (Debian package nftables)")
    return path


def _nft(*args: str, script: str | None = None) -> str:
    cmd = [nft_path(), *args] if script is None else [nft_path(), "-f", "-"]
    proc = subprocess.run(cmd, input=script, capture_output=True, text=True, timeout=10)
    if proc.returncode != 0:
        what = script.strip() if script is not None else " ".join(args)
        raise FaultToolError(f"nft failed ({proc.returncode}): {proc.stderr.strip()}\n{what}")
    return proc.stdout


def nft_available() -> str | None:
    """None if RtpBlock can work here, else why not (for pytest.skip)."""
    try:
        _nft("list", "tables")
    except (FaultToolError, OSError, subprocess.SubprocessError) as exc:
        return str(exc)
    return None


def _port_expr(ports: int | tuple[int, int]) -> str:
    if isinstance(ports, int):
        return str(ports)
    lo, hi = ports
    return f"{int(lo)}-{int(hi)}"


class RtpBlock:
    """Drop UDP packets in this network namespace while active.

    Matches UDP with source port ``src_port`` (the caller's RTP port) and/or
    destination port(s) ``dst_ports`` (an int or an inclusive (lo, hi) range,
    e.g. livekit-sip's RTP range). With both, a packet must match both. At
    least one is required. ``rtcp=True`` also drops src_port+1 (RTCP).
    Nothing but the table it created is touched.
    """

    def __init__(
        self,
        src_port: int | None = None,
        dst_ports: int | tuple[int, int] | None = None,
        *,
        rtcp: bool = False,
    ) -> None:
        if src_port is None and dst_ports is None:
            raise ValueError("RtpBlock needs src_port and/or dst_ports")
        self.src_port, self.dst_ports, self.rtcp = src_port, dst_ports, rtcp
        self.table = f"{TABLE_PREFIX}{os.getpid()}_{next(_seq)}"
        self.started_at: float | None = None  # time.monotonic() when the rule went in
        self.stopped_at: float | None = None
        self._final_dropped: int | None = None

    def rule(self) -> str:
        parts = ["meta l4proto udp"]
        if self.src_port is not None:
            sp = (
                _port_expr((self.src_port, self.src_port + 1))
                if self.rtcp
                else str(int(self.src_port))
            )
            parts.append(f"udp sport {sp}")
        if self.dst_ports is not None:
            parts.append(f"udp dport {_port_expr(self.dst_ports)}")
        return " ".join(parts) + " counter drop"

    @property
    def active(self) -> bool:
        return self.started_at is not None and self.stopped_at is None

    def start(self) -> RtpBlock:
        if self.active:
            return self
        # one transaction: the table appears with its rule or not at all
        _nft(
            script=(
                f"table inet {self.table} {{\n"
                f"  chain drop_in {{\n"
                f"    type filter hook input priority -10; policy accept;\n"
                f"    {self.rule()}\n"
                f"  }}\n"
                f"}}\n"
            )
        )
        self.started_at, self.stopped_at, self._final_dropped = time.monotonic(), None, None
        return self

    def dropped(self) -> int:
        """Packets dropped so far (after stop(): the final count)."""
        if not self.active:
            return self._final_dropped or 0
        data = json.loads(_nft("-j", "list", "table", "inet", self.table))
        total = 0
        for item in data.get("nftables", []):
            for expr in item.get("rule", {}).get("expr", []):
                if "counter" in expr:
                    total += int(expr["counter"].get("packets", 0))
        return total

    def stop(self) -> int:
        """Remove the rule (idempotent); returns the packets it dropped."""
        if not self.active:
            return self._final_dropped or 0
        try:
            self._final_dropped = self.dropped()
        except (FaultToolError, ValueError):
            self._final_dropped = None
        _nft("delete", "table", "inet", self.table)
        self.stopped_at = time.monotonic()
        return self._final_dropped or 0

    def __enter__(self) -> RtpBlock:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __del__(self) -> None:  # last resort; stop() is the way
        if self.active:
            try:
                _nft("delete", "table", "inet", self.table)
            except Exception:
                pass


def fault_tables() -> list[str]:
    """Names of the holdfaults_* tables in this network namespace."""
    out = _nft("-j", "list", "tables", "inet")
    names = [
        item["table"]["name"]
        for item in json.loads(out).get("nftables", [])
        if "table" in item and item["table"].get("name", "").startswith(TABLE_PREFIX)
    ]
    return names


def cleanup_stale(all_tables: bool = False) -> list[str]:
    """Delete holdfaults_* tables whose creating process is gone (or all of
    them with ``all_tables``). Returns the names deleted."""
    gone = []
    for name in fault_tables():
        pid_s = name[len(TABLE_PREFIX) :].split("_", 1)[0]
        alive = pid_s.isdigit() and os.path.exists(f"/proc/{pid_s}")
        if all_tables or not alive:
            _nft("delete", "table", "inet", name)
            gone.append(name)
    return gone


def free_rtp_port(lo: int = 40000, hi: int = 46000) -> int:
    """An even port N with N and N+1 free for UDP on 127.0.0.1 right now
    (for ``sip_caller --rtp-port``). Below livekit's ports (50000+)."""
    for _ in range(200):
        port = int.from_bytes(os.urandom(2), "big") % ((hi - lo) // 2) * 2 + lo
        socks = []
        try:
            for p in (port, port + 1):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind(("127.0.0.1", p))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise FaultToolError(f"no free even UDP port pair in {lo}-{hi}")
