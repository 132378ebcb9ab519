"""Settings: environment variables under HOLD_ (and a .env file), validated at start.

A bad value stops the worker before it registers, with one line that names
the variable (`config error: HOLD_FADE_MS: ...`). LiveKit's own connection
settings keep their standard names (LIVEKIT_URL, LIVEKIT_API_KEY,
LIVEKIT_API_SECRET), read by livekit-agents itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .media.detector import Thresholds
from .protocol import MEDIA_TOPIC
from .roles import AgentRule
from .stores import TransferUri

ENV_PREFIX = "HOLD_"
ASSETS = Path(__file__).resolve().parent.parent / "assets"
DEFAULT_HOLD_AUDIO = ASSETS / "hold-default.flac"
# Made by assets/make_announcement.sh (espeak-ng); `announcement: default` in a store map.
DEFAULT_ANNOUNCEMENT = ASSETS / "announce-default.flac"
# The agents' console, built by `make setup` (console/, npm ci + esbuild).
DEFAULT_CONSOLE = ASSETS.parent / "console" / "dist"


class SettingsError(Exception):
    """One line for the operator; never includes secret values."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_file=".env", extra="ignore", frozen=True
    )

    agent_name: str = Field("hold-agent", min_length=1, max_length=128)
    audio: Path = DEFAULT_HOLD_AUDIO
    level_dbfs: float = Field(-20.0, ge=-40.0, le=-6.0)
    max_audio_seconds: float = Field(600.0, gt=0.0, le=3600.0)
    # 500 ms chunks: every push completes through the SDK's process-wide FFI
    # event queue, which wakes every call's event loop, so fewer, larger
    # pushes cost less CPU; larger than 500 ms saves nothing more. Handoff
    # latency does not depend on it: a fade flushes the queue. Figures in the
    # README (measured figures) and BENCHMARKS.md.
    chunk_ms: int = Field(500, ge=10, le=1000)
    fade_ms: int = Field(400, ge=0, le=5000)
    # The hold track's publish options: RED (each packet also carries the
    # previous frame), DTX, and a ceiling on the Opus bitrate (0: the SDK's).
    track_red: bool = True
    track_dtx: bool = True
    track_max_bitrate: int = Field(0, ge=0, le=510_000)
    # Stores (worker/stores.py): a YAML map of dialled numbers / header values
    # to each store's hold audio, announcement and limits. Unset: one store,
    # the settings here.
    stores: Path | None = None
    # Without a store map: an announcement over the music every N seconds.
    announcement: Path | None = None
    announcement_every_s: float = Field(30.0, ge=5.0, le=3600.0)
    # How far the music is ducked under an announcement.
    announcement_duck_db: float = Field(-14.0, ge=-40.0, le=0.0)
    # Where the spoken prompts of position announcements (espeak-ng, rendered
    # once) are kept; unset: $XDG_CACHE_HOME/hold-worker/prompts, ~/.cache/...,
    # or a directory of this user's under the system temp directory.
    prompts_cache: Path | None = None
    caller_join_timeout_s: float = Field(30.0, gt=0.0, le=3600.0)
    max_wait_s: float = Field(0.0, ge=0.0, le=86400.0)
    max_wait_action: Literal["hangup", "transfer"] = "hangup"
    transfer_target: TransferUri = ""
    agent_identity_prefix: str = "agent-"
    agent_role_attribute: str = "role=agent"
    executor: Literal["thread", "process"] = "thread"
    # Calls one worker replica takes before it reports itself full, so that
    # LiveKit dispatch sends further calls to other replicas: what one core
    # holds within the benchmark's bounds (held calls per worker core,
    # BENCHMARKS.md); one process per core.
    max_calls: int = Field(20, ge=1, le=1000)
    # Job runners kept warm for the next calls (threads under the thread
    # executor): a burst of calls does not wait for runners to start.
    idle_jobs: int = Field(4, ge=0, le=100)
    # The agent's HTTP health endpoint (and its port). Loopback by default;
    # a container sets HOLD_HTTP_HOST=0.0.0.0 so probes can reach it.
    http_host: str = "127.0.0.1"
    http_port: int = Field(8081, ge=0, le=65535)
    metrics_port: int = Field(0, ge=0, le=65535)  # Prometheus; 0 = off
    # `python -m worker guardian` (worker/guardian.py): LiveKit's webhooks in,
    # re-dispatch of a call whose hold worker died.
    guardian_host: str = "127.0.0.1"
    guardian_port: int = Field(8090, ge=1, le=65535)
    # SIGTERM drains: the worker takes no new calls and waits up to this long
    # for the calls it holds to be handed over or to end, then exits. A
    # container's grace period (Kubernetes terminationGracePeriodSeconds) must
    # not be shorter. 15 min covers a store's usual longest hold.
    drain_timeout_s: int = Field(900, ge=1, le=86400)
    # A directory of files named LIVEKIT_URL, LIVEKIT_API_KEY and
    # LIVEKIT_API_SECRET (a mounted Kubernetes or Docker secret); a variable
    # set in the environment wins over its file. Empty: environment only.
    secrets_dir: Path | None = None
    # The Redis the LiveKit stack already runs (redis://host:port/db). Optional:
    # the call registry (each held call's record and heartbeat), and the
    # guardian's claims, so that two replicas make one re-dispatch.
    redis_url: str = ""
    # The guardian moves a call whose worker's heartbeat is older than this.
    stale_after_s: float = Field(1.5, ge=0.5, le=60.0)
    # `python -m worker desk` (worker/desk.py): the agents' queue service.
    # The store's backend signs the agents' tokens (HS256) with this secret;
    # required for `desk` (at least 32 bytes), never logged.
    desk_secret: SecretStr = SecretStr("")
    desk_host: str = "127.0.0.1"
    desk_port: int = Field(8095, ge=0, le=65535)
    # Lifetime of the LiveKit room token a take hands out.
    desk_token_ttl_s: int = Field(600, ge=30, le=86400)
    # How long a call's history of agent actions is kept after the call.
    desk_history_ttl_s: int = Field(86400, ge=60, le=90 * 86400)
    # a transfer to a named agent: only they may take the call for this long
    desk_offer_s: int = Field(30, ge=0, le=3600)
    # an agent seen on the desk's event stream within this long counts as
    # signed in to their stores (a store's max_wait_no_agents_s)
    desk_signed_in_s: int = Field(60, ge=10, le=3600)
    # The agents' console the desk serves at / (the built console/: make setup).
    desk_console: Path = DEFAULT_CONSOLE

    # One-way audio detection (worker/media/detector.py); seconds.
    media_settle_s: float = Field(2.0, ge=0.0, le=30.0)
    media_missing_after_s: float = Field(4.0, gt=0.0, le=120.0)
    media_stopped_after_s: float = Field(4.0, gt=0.0, le=120.0)
    media_silence_after_s: float = Field(6.0, gt=0.0, le=300.0)
    media_outbound_after_s: float = Field(5.0, gt=0.0, le=120.0)
    media_silence_peak_lsb: int = Field(4, ge=0, le=1000)
    media_topic: str = Field(MEDIA_TOPIC, min_length=1, max_length=64)
    # Where the caller's audio levels come from: WebRTC's audio-energy
    # statistics (no decoded frame crosses into Python), or an AudioStream of
    # the decoded audio (the older way, 5 events a second per call).
    media_levels: Literal["stats", "stream"] = "stats"
    # How often the caller's statistics are read (the detector's sample).
    media_poll_s: float = Field(0.5, ge=0.1, le=2.0)
    # Each call's room gets only its own FFI events (worker/ffi_fanout.py);
    # false keeps the SDK's fan-out to every room of the process.
    ffi_narrow: bool = True
    # What to do when the caller's media stays broken: nothing (default),
    # hang up, or transfer to HOLD_TRANSFER_TARGET.
    media_action: Literal["none", "hangup", "transfer"] = "none"
    media_action_after_s: float = Field(15.0, gt=0.0, le=3600.0)
    # After the handoff the worker stays in the room (no track, no media, only
    # room events) and brings hold audio back if every human agent leaves.
    # Also keep watching the caller's media for one-way audio:
    monitor_after_handoff: bool = False
    # ... or leave the room after the settle time (the old behaviour).
    leave_after_handoff: bool = False
    # After the handoff, agents present but none with live audio for this long
    # count as gone: hold audio comes back. 0 = only when every agent left.
    agent_quiet_s: float = Field(30.0, ge=0.0, le=3600.0)
    # Stay (silent, hold track still published) this long after the fade: an
    # agent who drops or mutes at once gets the caller back on hold at once.
    handoff_settle_s: float = Field(3.0, ge=0.0, le=60.0)

    @field_validator("chunk_ms")
    @classmethod
    def _chunk_multiple_of_10(cls, v: int) -> int:
        if v % 10:
            raise ValueError("must be a multiple of 10 ms (WebRTC audio runs in 10 ms frames)")
        return v

    @field_validator("agent_role_attribute")
    @classmethod
    def _key_value(cls, v: str) -> str:
        if v and ("=" not in v or not v.split("=", 1)[0]):
            raise ValueError("must be key=value, e.g. role=agent (or empty to disable)")
        return v

    @model_validator(mode="after")
    def _transfer_needs_target(self) -> Settings:
        if self.max_wait_s > 0 and self.max_wait_action == "transfer" and not self.transfer_target:
            raise ValueError(
                "HOLD_MAX_WAIT_ACTION=transfer needs HOLD_TRANSFER_TARGET (a tel: or sip: URI)"
            )
        if self.media_action == "transfer" and not self.transfer_target:
            raise ValueError(
                "HOLD_MEDIA_ACTION=transfer needs HOLD_TRANSFER_TARGET (a tel: or sip: URI)"
            )
        return self

    @property
    def media_thresholds(self) -> Thresholds:
        return Thresholds(
            settle_s=self.media_settle_s,
            missing_after_s=self.media_missing_after_s,
            stopped_after_s=self.media_stopped_after_s,
            silence_after_s=self.media_silence_after_s,
            outbound_after_s=self.media_outbound_after_s,
            silence_peak_lsb=self.media_silence_peak_lsb,
        )

    @property
    def agent_rule(self) -> AgentRule:
        key, _, value = self.agent_role_attribute.partition("=")
        return AgentRule(
            identity_prefix=self.agent_identity_prefix, role_attribute=key, role_value=value
        )


def load_settings(**overrides: object) -> Settings:
    """Build settings or raise SettingsError with one line naming the variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as e:
        err = e.errors()[0]
        loc = [str(x) for x in err.get("loc", ()) if x != "__root__"]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        if loc:
            name = ENV_PREFIX + loc[0].upper()
            got = err.get("input")
            shown = f" (got {got!r})" if isinstance(got, str | int | float) else ""
            raise SettingsError(f"{name}: {msg}{shown}") from None
        raise SettingsError(msg) from None
