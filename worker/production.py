"""Start-up checks for `python -m worker start` and the mounted-secret loader.

Pure functions over the settings and an environment mapping, so they are
unit-tested without a server. Errors stop the worker before it registers
(one line each, exit 2); warnings are printed and the worker goes on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from .settings import Settings

LIVEKIT_VARS = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
# The local stack's key pair (livekit.yaml) and livekit-server's --dev pair.
DEV_SECRETS = frozenset({"devsecret-loopback-only-not-a-real-secret", "secret"})
# Files whose presence means "running in a container" (Docker, podman).
CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))


class SecretsError(Exception):
    pass


def load_secrets_dir(directory: Path, env: MutableMapping[str, str]) -> list[str]:
    """Fill LIVEKIT_* from files in `directory` where the environment has none.

    Returns the names taken from files. Whitespace around a value (the
    newline `kubectl create secret --from-file` keeps) is stripped.
    """
    if not directory.is_dir():
        raise SecretsError(f"HOLD_SECRETS_DIR: {directory} is not a directory")
    taken = []
    for name in LIVEKIT_VARS:
        f = directory / name
        if env.get(name) or not f.exists():
            continue
        try:
            value = f.read_text().strip()
        except OSError as e:
            raise SecretsError(f"HOLD_SECRETS_DIR: cannot read {f}: {e.strerror}") from None
        if not value:
            raise SecretsError(f"HOLD_SECRETS_DIR: {f} is empty")
        env[name] = value
        taken.append(name)
    return taken


def _is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_production(
    s: Settings, env: Mapping[str, str], *, in_container: bool | None = None
) -> Findings:
    """What `start` refuses (errors) or points out (warnings)."""
    out = Findings()
    if in_container is None:
        in_container = any(m.exists() for m in CONTAINER_MARKERS)
    url = env.get("LIVEKIT_URL", "")
    host = urlparse(url).hostname or ""
    local = _is_loopback_host(host)
    if env.get("LIVEKIT_API_SECRET", "") in DEV_SECRETS and not local:
        out.errors.append(
            "LIVEKIT_API_SECRET: a development secret against a non-local server "
            f"({host}); use the project's key pair"
        )
    if url.startswith(("ws://", "http://")) and not local:
        out.warnings.append(
            f"LIVEKIT_URL: {url.split('://', 1)[0]}:// to {host} is unencrypted; "
            "LiveKit Cloud and public servers take wss://"
        )
    if s.http_port == 0:
        # A warning, not an error: several workers on one host (tests, benchmarks)
        # take random ports on purpose.
        out.warnings.append(
            "HOLD_HTTP_PORT: 0 (a random port) leaves health probes nothing to reach; "
            "set a fixed port (default 8081)"
        )
    if s.metrics_port and s.metrics_port == s.http_port:
        out.errors.append(
            f"HOLD_METRICS_PORT: {s.metrics_port} is also HOLD_HTTP_PORT; use another port"
        )
    if in_container and _is_loopback_host(s.http_host):
        out.warnings.append(
            f"HOLD_HTTP_HOST: {s.http_host} in a container; probes from outside cannot "
            "reach the health port (the image sets 0.0.0.0)"
        )
    return out


def summary(s: Settings) -> str:
    """One line of the production-relevant settings, no secrets."""
    return (
        f"agent={s.agent_name} executor={s.executor} max_calls={s.max_calls} "
        f"(load threshold 1.0 = full) drain_timeout_s={s.drain_timeout_s} "
        f"health=http://{s.http_host}:{s.http_port}/ "
        f"metrics={'port ' + str(s.metrics_port) if s.metrics_port else 'off'} log_format=json"
    )
