"""Prometheus metrics, served on livekit-agents' metrics port (HOLD_METRICS_PORT)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

MEDIA_VERDICTS = Counter(
    "hold_media_verdicts_total",
    "One-way audio verdicts reached (each change of verdict counts once)",
    ["verdict"],
)
CALLS = Gauge("hold_calls", "Calls this worker is in, by state", ["state"])
HANDOFFS = Counter("hold_handoffs_total", "Calls handed over to a human agent")
