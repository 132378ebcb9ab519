"""python -m worker dev | start | connect   (livekit-agents' CLI)
python -m worker provision                (inbound trunk + dispatch rule)
python -m worker guardian                 (webhooks: re-dispatch a call whose worker died)
python -m worker desk                     (the agents' queue service over the call registry)
python -m worker desk token --agent A --store S   (an agent's token, for local use)
"""

from __future__ import annotations

import faulthandler
import os
import signal
import sys

from .catalog import CatalogError
from .production import SecretsError, check_production, load_secrets_dir, summary
from .settings import SettingsError, load_settings

USAGE = __doc__ or ""


def _fail(msg: str) -> None:
    print(f"config error: {msg}", file=sys.stderr)
    raise SystemExit(2)


def _check_livekit_env(argv: list[str]) -> None:
    """LiveKit's URL and key pair come from the environment or the CLI flags."""
    given = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    for name, flag in (
        ("LIVEKIT_URL", "--url"),
        ("LIVEKIT_API_KEY", "--api-key"),
        ("LIVEKIT_API_SECRET", "--api-secret"),
    ):
        if not os.environ.get(name) and flag not in given:
            _fail(f"{name} is not set (or pass {flag})")
    url = os.environ.get("LIVEKIT_URL", "")
    if url and not url.startswith(("ws://", "wss://", "http://", "https://")):
        _fail(f"LIVEKIT_URL: must start with ws://, wss://, http:// or https:// (got {url!r})")


def enable_fault_stacks() -> None:
    """On a fatal signal (SIGSEGV, SIGABRT, SIGBUS, SIGFPE, SIGILL) write every
    thread's Python stack to stderr before the process dies.

    Under the thread executor every call of a worker shares one process, so
    a fault in the SDK's native code (a heap-corruption abort, RELIABILITY.md)
    ends them all; without this the log holds one line from glibc and nothing
    about what the calls were doing. livekit-agents does the same in its job
    processes (the process executor), not in a worker that runs jobs in
    threads. The standard library's handler, not ours: it is async-signal-safe.

    SIGUSR1 writes the same stacks and the process goes on: a worker that
    hangs (a drain that never ends) can be asked what it is doing with
    `kill -USR1 <pid>`; the benchmark does so before it kills one."""
    if not faulthandler.is_enabled():
        faulthandler.enable(all_threads=True)
    faulthandler.register(signal.SIGUSR1, all_threads=True)


def main(argv: list[str]) -> None:
    enable_fault_stacks()
    cmd = argv[1] if len(argv) > 1 else ""
    # livekit-agents watches every job's event loop for blocking: a watchdog
    # thread and a heartbeat, each waking every 20-50 ms per call, whatever
    # the threshold. On a held call that is a measurable share of the
    # worker's CPU (BENCHMARKS.md), so it is off unless set (e.g. 500 to be warned of a
    # loop blocked for half a second; hold audio tolerates that much, the
    # queue holds one to two chunks).
    os.environ.setdefault("LIVEKIT_AGENTS_LOOP_BLOCK_WARN_MS", "0")
    # livekit-agents preloads local inference models (VAD, end of turn) into
    # every worker; a hold worker uses none, and they take most of an idle
    # worker's memory (figures in BENCHMARKS.md).
    os.environ.setdefault("LIVEKIT_AGENTS_PRELOAD_LOCAL_INFERENCE", "0")
    if cmd == "guardian":
        from .guardian import main as guardian_main

        raise SystemExit(guardian_main(argv[2:]))
    if cmd == "provision":
        from .provision import main as provision_main

        raise SystemExit(provision_main(argv[2:]))

    try:
        settings = load_settings()
    except SettingsError as e:
        _fail(str(e))
    if cmd == "desk":
        from .desk import main as desk_main

        raise SystemExit(desk_main(argv[2:], settings))
    from .server import build_server, catalog, leave_now

    try:
        stores = catalog().load()  # every store's audio decoded: a broken file stops us here
    except CatalogError as e:
        _fail(str(e))
    audio = catalog().default_plan().hold
    if cmd in ("dev", "start", "connect"):
        if settings.secrets_dir is not None:
            try:
                load_secrets_dir(settings.secrets_dir, os.environ)
            except SecretsError as e:
                _fail(str(e))
        _check_livekit_env(argv[2:])
    if cmd == "start":
        found = check_production(settings, os.environ)
        for w in found.warnings:
            print(f"config warning: {w}", file=sys.stderr)
        if found.errors:
            for msg in found.errors[1:]:
                print(f"config error: {msg}", file=sys.stderr)
            _fail(found.errors[0])
        print(f"hold worker (start): {summary(settings)}", file=sys.stderr)
    print(
        f"hold worker: agent {settings.agent_name!r}, hold audio {audio.path} "
        f"({audio.seconds:.1f} s, {audio.source_rate} Hz x{audio.source_channels} -> 48 kHz mono)",
        file=sys.stderr,
    )
    if stores is not None:
        names = ", ".join(f"{k} ({v.name})" for k, v in stores.model.stores.items())
        print(
            f"hold worker: {len(stores.model.stores)} stores from {stores.path}: {names}",
            file=sys.stderr,
        )

    from livekit.agents import cli

    cli.run_app(build_server(settings))
    # run_app returns after the worker's shutdown: nothing is left to clean
    # up, and the interpreter's finalization is a window for the SDK's native
    # threads to abort the process (leave_now).
    leave_now(0)


if __name__ == "__main__":
    main(sys.argv)
