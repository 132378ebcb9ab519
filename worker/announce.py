"""Position announcements: what a waiting caller is told, and when (pure).

"You are caller number 3. The expected wait is about 2 minutes." spoken over
the ducked music, composed from prompts (prompts.py renders or loads them):
a phrase, a number, a phrase. What is said comes from the caller's place in
their store's line (the registry) and the store's recent waits (waits.py);
when it is said from a per-call schedule: the first `first_after_s` into the
hold, then every `every_s`, never two within `min_gap_s` (a caller put back
on hold after an agent left starts the schedule again, but not the gap), and
only while the caller is holding.

No I/O and no livekit import; time comes in as an argument.
"""

from __future__ import annotations

from dataclasses import dataclass

from .waits import SpokenWait, wait_numbers

# Positions up to this are said as numbers; a store's `many_callers_above`
# may not exceed it (above it only "many callers are waiting" is said).
MAX_SPOKEN_POSITION = 20

# The phrases a prompt set holds besides the numbers, in the order a caller
# may hear them. A store's recorded prompts are files named after them
# (`caller_number.wav`, ...), numbers `number_<n>` (`number_3.wav`).
CALLER_NUMBER = "caller_number"  # "You are caller number" (then the number)
MANY_CALLERS = "many_callers"  # said instead of a position above many_callers_above
WAIT_ABOUT = "wait_about"  # "The expected wait is about" (then a number and `minutes`)
MINUTES = "minutes"
WAIT_ONE_MINUTE = "wait_one_minute"
WAIT_UNDER_MINUTE = "wait_under_minute"
WAIT_OVER_HOUR = "wait_over_hour"
PHRASE_KEYS = (
    CALLER_NUMBER,
    MANY_CALLERS,
    WAIT_ABOUT,
    MINUTES,
    WAIT_ONE_MINUTE,
    WAIT_UNDER_MINUTE,
    WAIT_OVER_HOUR,
)

# The phrases in the languages that come with the worker. A store in another
# language (any espeak-ng voice) gives its own texts (`phrases:` in the store
# map) or recorded prompts; numbers are written as digits, which espeak-ng
# reads in the voice's language.
BUILT_IN_PHRASES: dict[str, dict[str, str]] = {
    "en": {
        CALLER_NUMBER: "You are caller number",
        MANY_CALLERS: "Many callers are waiting.",
        WAIT_ABOUT: "The expected wait is about",
        MINUTES: "minutes.",
        WAIT_ONE_MINUTE: "The expected wait is about one minute.",
        WAIT_UNDER_MINUTE: "The expected wait is less than a minute.",
        WAIT_OVER_HOUR: "The expected wait is more than an hour.",
    },
    "de": {
        CALLER_NUMBER: "Sie sind Anrufer Nummer",
        MANY_CALLERS: "Es warten viele Anrufer.",
        WAIT_ABOUT: "Die voraussichtliche Wartezeit beträgt etwa",
        MINUTES: "Minuten.",
        WAIT_ONE_MINUTE: "Die voraussichtliche Wartezeit beträgt etwa eine Minute.",
        WAIT_UNDER_MINUTE: "Die voraussichtliche Wartezeit beträgt weniger als eine Minute.",
        WAIT_OVER_HOUR: "Die voraussichtliche Wartezeit beträgt mehr als eine Stunde.",
    },
    "fr": {
        CALLER_NUMBER: "Vous êtes l'appelant numéro",
        MANY_CALLERS: "De nombreux appelants sont en attente.",
        WAIT_ABOUT: "Le temps d'attente estimé est d'environ",
        MINUTES: "minutes.",
        WAIT_ONE_MINUTE: "Le temps d'attente estimé est d'environ une minute.",
        WAIT_UNDER_MINUTE: "Le temps d'attente estimé est de moins d'une minute.",
        WAIT_OVER_HOUR: "Le temps d'attente estimé est de plus d'une heure.",
    },
    "es": {
        CALLER_NUMBER: "Usted es la llamada número",
        MANY_CALLERS: "Hay muchas personas esperando.",
        WAIT_ABOUT: "El tiempo de espera estimado es de unos",
        MINUTES: "minutos.",
        WAIT_ONE_MINUTE: "El tiempo de espera estimado es de un minuto.",
        WAIT_UNDER_MINUTE: "El tiempo de espera estimado es de menos de un minuto.",
        WAIT_OVER_HOUR: "El tiempo de espera estimado es de más de una hora.",
    },
    "nl": {
        CALLER_NUMBER: "U bent beller nummer",
        MANY_CALLERS: "Er wachten veel bellers.",
        WAIT_ABOUT: "De verwachte wachttijd is ongeveer",
        MINUTES: "minuten.",
        WAIT_ONE_MINUTE: "De verwachte wachttijd is ongeveer één minuut.",
        WAIT_UNDER_MINUTE: "De verwachte wachttijd is minder dan een minuut.",
        WAIT_OVER_HOUR: "De verwachte wachttijd is meer dan een uur.",
    },
}


def built_in_phrases(language: str) -> dict[str, str] | None:
    """The phrase texts for an espeak-ng voice name (`en-us` reads `en`'s)."""
    lang = language.lower()
    return BUILT_IN_PHRASES.get(lang) or BUILT_IN_PHRASES.get(lang.split("-", 1)[0])


def number_key(n: int) -> str:
    return f"number_{n}"


def spoken_numbers() -> list[int]:
    """Every number an announcement may contain: positions and wait minutes."""
    return sorted({*range(1, MAX_SPOKEN_POSITION + 1), *wait_numbers()})


def prompt_texts(phrases: dict[str, str]) -> dict[str, str]:
    """Every prompt of a set (key -> text to render): the phrases and numbers."""
    return {**phrases, **{number_key(n): str(n) for n in spoken_numbers()}}


def what_to_say(
    position: int | None, wait: SpokenWait | None, *, many_callers_above: int
) -> list[list[str]]:
    """The announcement as sentences of prompt keys; nothing for a caller
    who is not in line (taken by an agent already, or not yet written)."""
    if position is None or position < 1:
        return []
    if position > min(many_callers_above, MAX_SPOKEN_POSITION):
        said = [[MANY_CALLERS]]
    else:
        said = [[CALLER_NUMBER, number_key(position)]]
    if wait is None:
        return said
    if wait.kind == "under_minute":
        said.append([WAIT_UNDER_MINUTE])
    elif wait.kind == "over_hour":
        said.append([WAIT_OVER_HOUR])
    elif wait.minutes == 1:
        said.append([WAIT_ONE_MINUTE])
    else:
        said.append([WAIT_ABOUT, number_key(wait.minutes), MINUTES])
    return said


@dataclass
class AnnounceSchedule:
    """When a call's next position announcement is due (times in seconds of
    one monotonic clock). Holding starts the schedule (the first after
    `first_after`), anything else stops it; every announcement made or
    skipped sets the next `every` later; none comes within `min_gap` of the
    last one made."""

    first_after: float
    every: float
    min_gap: float
    next_at: float | None = None
    last_at: float | None = None

    def holding(self, now: float) -> None:
        """The caller is (again) on hold and waiting for an agent."""
        if self.next_at is None:
            self.next_at = self._not_too_soon(now + self.first_after)

    def stopped(self) -> None:
        """Not holding any more (an agent has the call, or it ended)."""
        self.next_at = None

    def due(self, now: float) -> bool:
        return self.next_at is not None and now >= self.next_at

    def made(self, now: float) -> None:
        """An announcement started at `now`."""
        self.last_at = now
        if self.next_at is not None:
            self.next_at = self._not_too_soon(now + self.every)

    def skipped(self, now: float) -> None:
        """Due, but nothing was said (not in line, the registry unreachable)."""
        if self.next_at is not None:
            self.next_at = self._not_too_soon(now + self.every)

    def _not_too_soon(self, at: float) -> float:
        return at if self.last_at is None else max(at, self.last_at + self.min_gap)
