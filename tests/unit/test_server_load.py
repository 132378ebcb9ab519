"""A replica with no call that is sent several calls at once (a dead worker's
calls, re-dispatched by the guardian) says yes to all of them while they fit
under HOLD_MAX_CALLS. livekit-agents' own estimate refused the fifth of five
with four idle runners (CI, 2026-11-30)."""

from __future__ import annotations

from types import SimpleNamespace

from livekit.agents import AgentServer

from worker.server import HoldServer


def pending(server: AgentServer, n: int) -> AgentServer:
    server._devmode = False  # set by run(); production values
    server._proc_pool = SimpleNamespace(processes=[])  # no job runner busy
    server._worker_load = 0.0  # no call running yet
    server._reserved_slots = n  # said yes to n calls, none started yet
    return server


def test_five_calls_at_once_to_an_idle_replica_are_all_taken() -> None:
    server = HoldServer(max_calls=20, num_idle_processes=4, port=0)
    for n in range(20):
        assert pending(server, n)._is_available(), n
    assert not pending(server, 20)._is_available()


def test_the_stock_estimate_refuses_the_fifth() -> None:
    # If this fails after an upgrade, livekit-agents changed its estimate.
    stock = AgentServer(load_threshold=1.0, num_idle_processes=4, port=0)
    assert pending(stock, 3)._is_available()
    assert not pending(stock, 4)._is_available()


def test_load_is_the_share_of_max_calls_in_use() -> None:
    server = HoldServer(max_calls=20, num_idle_processes=4, port=0)
    server._proc_pool = SimpleNamespace(processes=[SimpleNamespace(running_job=j) for j in "ab"])
    assert server._load_by_calls() == 2 / 20
