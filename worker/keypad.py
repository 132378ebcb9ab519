"""Keypad options while holding: what a caller's key does, and what they hear (pure).

A store may offer (store map, `keypad:`):

- callback: the caller presses `callback_key`, hears the last four digits of
  their number read back ("We will call you back at the number ending in
  1 2 3 4. To confirm, press 1.") and confirms with `confirm_key`; any other
  key or `confirm_timeout_s` without one cancels, and the music goes on. A
  confirmed request is stored in the call registry and the call ends with a
  short confirmation;
- operator: `operator_key` transfers the caller to the store's operator
  (SIP REFER through LiveKit's transfer API; a failed transfer hangs up, as
  the maximum wait's transfer does).

Unknown keys are ignored; a key that does something cuts the prompt being
said. Leaving a message is out of scope (README).

`KeypadMenu` is the per-call state machine: keys and time in, what to do
out. No I/O and no livekit import; time comes in as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KEYS = frozenset("0123456789*#")
SPOKEN_KEYS = frozenset("0123456789")  # keys a prompt can say ("press 1")

# The keypad prompts besides the digits (`digit_0` ... `digit_9`). A store's
# recorded prompts are files named after them (`callback_number.wav`, ...).
CALLBACK_NUMBER = "callback_number"  # "We will call you back at the number ending in"
CALLBACK_CONFIRM = "callback_confirm"  # "To confirm, press" (then the key)
CALLBACK_DONE = "callback_done"  # "Thank you, we will call you back. Goodbye."
CALLBACK_OFFER = "callback_offer"  # "To be called back instead of waiting, press"
NO_AGENTS_GOODBYE = "no_agents_goodbye"  # the maximum wait's hang-up, with a prompt
KEYPAD_PHRASE_KEYS = (
    CALLBACK_NUMBER,
    CALLBACK_CONFIRM,
    CALLBACK_DONE,
    CALLBACK_OFFER,
    NO_AGENTS_GOODBYE,
)

BUILT_IN_KEYPAD_PHRASES: dict[str, dict[str, str]] = {
    "en": {
        CALLBACK_NUMBER: "We will call you back at the number ending in",
        CALLBACK_CONFIRM: "To confirm, press",
        CALLBACK_DONE: "Thank you. We will call you back soon. Goodbye.",
        CALLBACK_OFFER: "To be called back instead of waiting, press",
        NO_AGENTS_GOODBYE: "We are sorry, nobody can take your call now. "
        "Please call again later. Goodbye.",
    },
    "de": {
        CALLBACK_NUMBER: "Wir rufen Sie zurück unter der Nummer mit der Endung",
        CALLBACK_CONFIRM: "Zur Bestätigung drücken Sie die",
        CALLBACK_DONE: "Vielen Dank. Wir rufen Sie bald zurück. Auf Wiederhören.",
        CALLBACK_OFFER: "Für einen Rückruf statt zu warten, drücken Sie die",
        NO_AGENTS_GOODBYE: "Leider kann gerade niemand Ihren Anruf annehmen. "
        "Bitte rufen Sie später wieder an. Auf Wiederhören.",
    },
}


def built_in_keypad_phrases(language: str) -> dict[str, str] | None:
    lang = language.lower()
    return BUILT_IN_KEYPAD_PHRASES.get(lang) or BUILT_IN_KEYPAD_PHRASES.get(lang.split("-", 1)[0])


def digit_key(d: str) -> str:
    return f"digit_{d}"


def keypad_prompt_texts(phrases: dict[str, str]) -> dict[str, str]:
    """Every keypad prompt (key -> text): the phrases and the ten digits."""
    return {**phrases, **{digit_key(d): d for d in sorted(SPOKEN_KEYS)}}


def last_four(number: str) -> str:
    """The last four digits of a number ("" when it has fewer than four)."""
    digits = "".join(c for c in number if c.isdigit())
    return digits[-4:] if len(digits) >= 4 else ""


def read_back(number: str, confirm_key: str) -> list[list[str]]:
    """What the caller hears after asking for a callback, as prompt keys."""
    return [
        [CALLBACK_NUMBER, *(digit_key(d) for d in last_four(number))],
        [CALLBACK_CONFIRM, digit_key(confirm_key)],
    ]


def offer(callback_key: str) -> list[list[str]]:
    """The maximum wait's callback offer."""
    return [[CALLBACK_OFFER, digit_key(callback_key)]]


# ---- the per-call menu ---------------------------------------------------------


@dataclass(frozen=True)
class ReadBack:
    """Say the number and how to confirm (cut what is being said first)."""

    sentences: list[list[str]]


@dataclass(frozen=True)
class Cancelled:
    """Back to the music (a wrong key or no key in time)."""

    why: str


@dataclass(frozen=True)
class CallbackConfirmed:
    """Store the request, say the confirmation, end the call."""


@dataclass(frozen=True)
class ToOperator:
    """Transfer the caller to the store's operator."""

    target: str


KeyAction = ReadBack | Cancelled | CallbackConfirmed | ToOperator


@dataclass
class KeypadMenu:
    """One call's keypad: `key()` for each digit the caller sends, `tick()`
    when `deadline` passes. `active` says whether keys mean anything now (the
    call sets it: only while the caller is holding for an agent)."""

    callback_key: str | None
    confirm_key: str
    confirm_timeout_s: float
    operator_key: str | None
    operator_target: str
    caller_number: str = ""  # the full number: never logged
    state: Literal["idle", "confirming", "done"] = "idle"
    deadline: float | None = None  # confirming: the answer is due by then
    ignored: int = 0  # keys that did nothing (counted, for the log and tests)

    def callback_possible(self) -> bool:
        return self.callback_key is not None and bool(last_four(self.caller_number))

    def key(self, digit: str, now: float, *, active: bool = True) -> KeyAction | None:
        if self.state == "done" or digit not in KEYS or not active:
            self.ignored += 1
            return None
        if self.state == "confirming":
            if digit == self.confirm_key:
                self.state, self.deadline = "done", None
                return CallbackConfirmed()
            self.state, self.deadline = "idle", None
            return Cancelled(f"key {digit} instead of {self.confirm_key}")
        if digit == self.callback_key and self.callback_possible():
            return self.start_confirming(now)
        if digit == self.operator_key and self.operator_target:
            self.state = "done"
            return ToOperator(self.operator_target)
        self.ignored += 1
        return None

    def start_confirming(self, now: float) -> ReadBack:
        """Read the number back and wait for the confirmation (the key, or a
        maximum wait's callback offer)."""
        self.state = "confirming"
        self.deadline = now + self.confirm_timeout_s
        return ReadBack(read_back(self.caller_number, self.confirm_key))

    def not_stored(self) -> None:
        """The confirmed callback could not be stored: back to the music, and
        the keys work again."""
        self.state, self.deadline = "idle", None

    def prompt_ends(self, at: float) -> None:
        """The read-back ends at `at`: the time to answer counts from then."""
        if self.state == "confirming":
            self.deadline = at + self.confirm_timeout_s

    def tick(self, now: float) -> KeyAction | None:
        if self.state == "confirming" and self.deadline is not None and now >= self.deadline:
            self.state, self.deadline = "idle", None
            return Cancelled("no key in time")
        return None
