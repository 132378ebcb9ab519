"""The fault tests' hold audio is one tone (conftest's `tone_worker`), so
"the caller hears hold audio" is the share of that tone in 100 ms windows
(harness.analysis.CallerAudio)."""

TONE_HOLD_HZ = 500.0
