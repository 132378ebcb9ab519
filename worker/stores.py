"""Stores: which store a call is for, and that store's hold audio and limits.

A store map (YAML, `HOLD_STORES`) is validated by pydantic when the worker
starts; an error names the entry and the field
(`stores.downtown.hold_audio: file not found: ...`). The same file drives
`python -m worker provision`, which puts the stores' numbers on the inbound
trunk and maps the routing header to a participant attribute, so a new store
is one edit here plus a re-run of provision.

    header: X-Store-Id          # SIP header the carrier may add (optional)
    attribute: store.id         # ... mapped by the trunk to this attribute
    default: main               # the store when nothing matches (warned in the log)
    stores:
      main:
        name: Main Street
        numbers: ["+15550100"]  # dialled numbers (sip.trunkPhoneNumber)
        header_values: ["0001"] # values of the header (default: the store's key)
        hold_audio: main.flac   # relative to this file
        announcement: thanks.flac
        announcement_every_s: 30
        max_wait_s: 600
        fallback: transfer      # or hangup
        transfer_target: tel:+15550111
        show_caller_number: true  # the desk shows its agents the full number
        language: en            # an espeak-ng voice (espeak-ng --voices); default en
        position_announcements: # "You are caller number 3. The expected wait is ..."
          enabled: true         # default false: nothing changes for a store without it
          first_after_s: 20
          every_s: 60
          min_gap_s: 30
          many_callers_above: 10
          announce_wait: true
          prompts_dir: prompts/main  # recorded prompt files, relative to this file
        max_wait_no_agents_s: 120 # with none of its agents signed in at the desk
        no_agents_fallback: hangup  # or transfer, callback (fallback may be callback too)
        keypad:                 # keypad options while holding (keypad.py); off by default
          callback_key: "1"
          confirm_key: "1"
          operator_key: "0"     # to operator_target (default: transfer_target)
          webhook: {url: https://backend/cb, secret_env: MAIN_CALLBACK_SECRET}

Resolution order: the header attribute, then the dialled number, then the
default. Pure: no livekit import; file checks only (decoding is the worker's).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .announce import MAX_SPOKEN_POSITION, PHRASE_KEYS, built_in_phrases
from .keypad import KEYPAD_PHRASE_KEYS, KEYS, SPOKEN_KEYS, built_in_keypad_phrases

# A whole string that is one E.164 number (validates the numbers of a store map).
E164_NUMBER = re.compile(r"^\+[1-9][0-9]{6,14}$")
STORE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
HEADER_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,63}$")
ATTRIBUTE_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,63}$")
# An espeak-ng voice name as `espeak-ng --voices` lists them (en, en-us,
# cmn-latn-pinyin, chr-US-Qaaa-x-west); whether it exists is checked at start
# against espeak-ng itself (prompts.py).
LANGUAGE = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*$")
DEFAULT_LANGUAGE = "en"


def transfer_uri(v: str) -> str:
    """A SIP REFER target: empty, or a tel: / sip: URI (shared with settings.py)."""
    v = v.strip()
    if (v and not v.startswith(("tel:", "sip:"))) or v in ("tel:", "sip:"):
        raise ValueError("must be a tel: or sip: URI, e.g. tel:+15550100 or sip:desk@pbx")
    return v


# A field holding a SIP REFER target (the settings' and a store's transfer
# target, a store's operator): checked by transfer_uri wherever it is declared.
TransferUri = Annotated[str, AfterValidator(transfer_uri)]


class StoreMapError(Exception):
    """One line for the operator, naming the file, entry and field."""


class PositionAnnouncements(BaseModel):
    """A store's position announcements ("You are caller number 3. The
    expected wait is about 2 minutes."), spoken over the ducked music. Off
    unless `enabled`; they need the call registry (HOLD_REDIS_URL)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    first_after_s: float = Field(20.0, ge=0.0, le=3600.0)  # into the hold
    every_s: float = Field(60.0, ge=10.0, le=3600.0)  # then again every ...
    min_gap_s: float = Field(30.0, ge=5.0, le=3600.0)  # never two closer than this
    # above this position only "many callers are waiting" is said
    many_callers_above: int = Field(10, ge=1, le=MAX_SPOKEN_POSITION)
    announce_wait: bool = True  # say the expected wait (when enough is known)
    # the expected wait needs at least this many calls taken within wait_window_s
    wait_min_calls: int = Field(3, ge=1, le=10)
    wait_window_s: float = Field(3600.0, ge=60.0, le=7 * 86400.0)
    # recorded prompts (`caller_number.wav`, `number_3.wav`, ...) replacing the
    # rendered ones; relative to the store map
    prompts_dir: Path | None = None
    # the phrases' texts, for a language without built-in ones (or to reword them)
    phrases: dict[str, str] = Field(default_factory=dict)

    @field_validator("phrases")
    @classmethod
    def _phrase_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key, text in v.items():
            if key not in PHRASE_KEYS:
                raise ValueError(f"{key!r} is not a phrase; the phrases: {', '.join(PHRASE_KEYS)}")
            if not text.strip() or len(text) > 200:
                raise ValueError(f"{key}: a phrase of 1 to 200 characters")
        return v


ENV_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,127}$")


class CallbackWebhook(BaseModel):
    """Where a store's backend hears of callback requests (sent by the desk,
    signed with HMAC-SHA256 of the body, retried with backoff)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(min_length=1, max_length=500)
    # the NAME of the environment variable holding the secret: never the
    # secret itself in the store map
    secret_env: str

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @field_validator("secret_env")
    @classmethod
    def _env(cls, v: str) -> str:
        if not ENV_NAME.match(v):
            raise ValueError(
                f"{v!r}: the name of an environment variable, e.g. MAIN_WEBHOOK_SECRET"
            )
        return v


class KeypadOptions(BaseModel):
    """A store's keypad options while holding (keypad.py). Off unless a key
    is set: a store without them keeps the music and nothing else."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    callback_key: str | None = None  # e.g. "1": ask to be called back
    confirm_key: str = "1"  # ... and confirm with this one (said in the prompt)
    confirm_timeout_s: float = Field(8.0, ge=2.0, le=60.0)  # after the read-back
    operator_key: str | None = None  # e.g. "0": transfer to the operator
    operator_target: TransferUri = ""  # default: the store's transfer_target
    # the full number in the callback request (registry, desk, webhook); default
    # the store's show_caller_number. Never logged either way.
    callback_full_number: bool | None = None
    webhook: CallbackWebhook | None = None
    # the prompts' texts, for a language without built-in ones (or to reword them)
    phrases: dict[str, str] = Field(default_factory=dict)

    @field_validator("callback_key", "operator_key")
    @classmethod
    def _key(cls, v: str | None) -> str | None:
        if v is not None and v not in KEYS:
            raise ValueError(f"{v!r} is not a key: one of 0-9, * or #")
        return v

    @field_validator("confirm_key")
    @classmethod
    def _confirm(cls, v: str) -> str:
        if v not in SPOKEN_KEYS:
            raise ValueError(f"{v!r}: a digit 0-9 (the prompt says it)")
        return v

    @field_validator("phrases")
    @classmethod
    def _phrase_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key, text in v.items():
            if key not in KEYPAD_PHRASE_KEYS:
                raise ValueError(
                    f"{key!r} is not a keypad phrase; they are: {', '.join(KEYPAD_PHRASE_KEYS)}"
                )
            if not text.strip() or len(text) > 200:
                raise ValueError(f"{key}: a phrase of 1 to 200 characters")
        return v

    @property
    def enabled(self) -> bool:
        return self.callback_key is not None or self.operator_key is not None


class Store(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=100)
    numbers: tuple[str, ...] = ()
    header_values: tuple[str, ...] | None = None
    hold_audio: Path | None = None  # None: HOLD_AUDIO
    announcement: Path | None = None
    announcement_every_s: float = Field(30.0, ge=5.0, le=3600.0)
    announcement_first_s: float | None = Field(None, ge=0.0, le=3600.0)  # default: every_s
    max_wait_s: float | None = Field(None, ge=0.0, le=86400.0)  # None: HOLD_MAX_WAIT_S
    # callback: offer a callback (needs keypad.callback_key); hangup says the
    # goodbye prompt first where the store has keypad prompts
    fallback: Literal["hangup", "transfer", "callback"] | None = None  # None: HOLD_MAX_WAIT_ACTION
    # With none of the store's agents signed in at the desk (seen on its event
    # stream lately): this maximum wait instead, and its own action.
    max_wait_no_agents_s: float | None = Field(None, ge=1.0, le=86400.0)
    no_agents_fallback: Literal["hangup", "transfer", "callback"] = "hangup"
    transfer_target: TransferUri = ""
    # The desk shows this store's agents the caller's full number (a point-of-sale
    # system looks customers up by it); otherwise only the masked one. Never logged.
    show_caller_number: bool = False
    # The store's language: an espeak-ng voice, for its spoken prompts.
    language: str = DEFAULT_LANGUAGE
    position_announcements: PositionAnnouncements = Field(
        default_factory=lambda: PositionAnnouncements.model_validate({})
    )
    keypad: KeypadOptions = Field(default_factory=lambda: KeypadOptions.model_validate({}))

    @field_validator("language")
    @classmethod
    def _language(cls, v: str) -> str:
        if not LANGUAGE.match(v):
            raise ValueError(f"{v!r} is not an espeak-ng voice name such as en, de or en-us")
        return v

    @field_validator("numbers")
    @classmethod
    def _e164(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for n in v:
            if not E164_NUMBER.match(n):
                raise ValueError(f"{n!r} is not an E.164 number such as +15550100")
        return v

    @model_validator(mode="after")
    def _transfer_needs_target(self) -> Store:
        if self.fallback == "transfer" and not self.transfer_target:
            raise ValueError("fallback: transfer needs transfer_target (a tel: or sip: URI)")
        if self.max_wait_no_agents_s is not None:
            if self.no_agents_fallback == "transfer" and not self.transfer_target:
                raise ValueError("no_agents_fallback: transfer needs transfer_target")
        for name, value in (
            ("fallback", self.fallback),
            ("no_agents_fallback", self.no_agents_fallback),
        ):
            if value == "callback" and self.keypad.callback_key is None:
                raise ValueError(f"{name}: callback needs keypad.callback_key")
        pa = self.position_announcements
        if pa.enabled and pa.prompts_dir is None and built_in_phrases(self.language) is None:
            missing = [k for k in PHRASE_KEYS if k not in pa.phrases]
            if missing:
                raise ValueError(
                    f"position_announcements: no built-in phrases in {self.language!r}: give "
                    f"phrases ({', '.join(missing)}) or recorded prompts (prompts_dir)"
                )
        kp = self.keypad
        if kp.callback_key is not None and kp.callback_key == kp.operator_key:
            raise ValueError(f"keypad: callback_key and operator_key are both {kp.callback_key!r}")
        if kp.operator_key is not None and not (kp.operator_target or self.transfer_target):
            raise ValueError("keypad: operator_key needs operator_target (or transfer_target)")
        if kp.enabled and built_in_keypad_phrases(self.language) is None:
            missing = [k for k in KEYPAD_PHRASE_KEYS if k not in kp.phrases]
            if missing and pa.prompts_dir is None:
                raise ValueError(
                    f"keypad: no built-in prompts in {self.language!r}: give phrases "
                    f"({', '.join(missing)}) or recorded prompts "
                    "(position_announcements.prompts_dir)"
                )
        return self

    @property
    def operator_target(self) -> str:
        return self.keypad.operator_target or self.transfer_target

    @property
    def callback_full_number(self) -> bool:
        kp = self.keypad.callback_full_number
        return self.show_caller_number if kp is None else kp


class StoreMapModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    header: str | None = None
    attribute: str = "store.id"
    default: str
    stores: dict[str, Store] = Field(min_length=1)

    @field_validator("header")
    @classmethod
    def _header(cls, v: str | None) -> str | None:
        if v is not None and not HEADER_NAME.match(v):
            raise ValueError(f"{v!r} is not a SIP header name such as X-Store-Id")
        return v

    @field_validator("attribute")
    @classmethod
    def _attribute(cls, v: str) -> str:
        if not ATTRIBUTE_NAME.match(v) or v.startswith(("sip.", "lk.", "hold.")):
            raise ValueError(
                f"{v!r}: use a lower-case name outside sip.*, lk.* and hold.*, e.g. store.id"
            )
        return v

    @field_validator("stores")
    @classmethod
    def _keys(cls, v: dict[str, Store]) -> dict[str, Store]:
        for key in v:
            if not STORE_KEY.match(str(key)):
                raise ValueError(f"store key {key!r}: letters, digits, '_', '.', '-' only")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> StoreMapModel:
        if self.default not in self.stores:
            raise ValueError(f"default: {self.default!r} is not one of the stores")
        seen: dict[str, str] = {}
        for key, store in self.stores.items():
            for n in store.numbers:
                if n in seen:
                    raise ValueError(f"stores.{key}.numbers: {n} is also store {seen[n]!r}'s")
                seen[n] = key
        seen_h: dict[str, str] = {}
        for key, store in self.stores.items():
            for h in store.header_values or (key,):
                if h in seen_h:
                    raise ValueError(
                        f"stores.{key}.header_values: {h!r} is also store {seen_h[h]!r}'s"
                    )
                seen_h[h] = key
        return self


@dataclass(frozen=True)
class Resolved:
    key: str
    store: Store
    matched_by: Literal["header", "number", "default"]


@dataclass(frozen=True)
class StoreMap:
    path: Path
    model: StoreMapModel

    @property
    def default(self) -> tuple[str, Store]:
        return self.model.default, self.model.stores[self.model.default]

    @property
    def numbers(self) -> list[str]:
        return [n for s in self.model.stores.values() for n in s.numbers]

    def headers_to_attributes(self) -> dict[str, str]:
        return {self.model.header: self.model.attribute} if self.model.header else {}

    def resolve(self, attributes: Mapping[str, str]) -> Resolved:
        """The store for a SIP participant's attributes (header, then number, then default)."""
        value = attributes.get(self.model.attribute, "").strip()
        if value:
            for key, store in self.model.stores.items():
                if value in (store.header_values or (key,)):
                    return Resolved(key, store, "header")
        dialled = attributes.get("sip.trunkPhoneNumber", "").strip()
        if dialled:
            for key, store in self.model.stores.items():
                if dialled in store.numbers:
                    return Resolved(key, store, "number")
        key, store = self.default
        return Resolved(key, store, "default")


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(x) for x in loc) or "(top level)"


DEFAULT_KEYWORD = "default"  # `announcement: default` = the project's own announcement


def load_store_map(path: str | Path, *, default_announcement: Path | None = None) -> StoreMap:
    """Read and validate a store map; audio paths become absolute and must exist.

    `announcement: default` names `default_announcement` (the project's).
    """
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise StoreMapError(f"{p}: file not found") from None
    except OSError as e:
        raise StoreMapError(f"{p}: cannot read: {e.strerror}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = getattr(e, "problem", None) or "not valid YAML"
        raise StoreMapError(f"{p}: {problem}{at}") from None
    if not isinstance(raw, dict):
        raise StoreMapError(f"{p}: expected a mapping with 'default' and 'stores'")
    try:
        model = StoreMapModel.model_validate(raw)
    except ValidationError as e:
        err = e.errors()[0]
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        loc = tuple(err.get("loc", ()))
        if not loc or msg.startswith(("stores.", "default:")):
            raise StoreMapError(f"{p}: {msg}") from None
        raise StoreMapError(f"{p}: {_where(loc)}: {msg}") from None
    base = p.resolve().parent
    stores = {}
    for key, store in model.stores.items():
        fixed = {}
        for field in ("hold_audio", "announcement"):
            f = getattr(store, field)
            if f is None:
                continue
            if field == "announcement" and str(f) == DEFAULT_KEYWORD:
                if default_announcement is None:
                    raise StoreMapError(f"{p}: stores.{key}.announcement: no default here")
                f = default_announcement
            full = f if f.is_absolute() else base / f
            if not full.is_file():
                raise StoreMapError(f"{p}: stores.{key}.{field}: file not found: {full}")
            fixed[field] = full
        pa = store.position_announcements
        if pa.prompts_dir is not None:
            d = pa.prompts_dir if pa.prompts_dir.is_absolute() else base / pa.prompts_dir
            if not d.is_dir():
                raise StoreMapError(
                    f"{p}: stores.{key}.position_announcements.prompts_dir: not a directory: {d}"
                )
            fixed["position_announcements"] = pa.model_copy(update={"prompts_dir": d})
        stores[key] = store.model_copy(update=fixed)
    return StoreMap(p, model.model_copy(update={"stores": stores}))
