"""The harness: what stands around the hold worker to call it, answer it and
judge it on the real stack. Imported by tests/, bench/ and the demo; never by
the worker (the container image holds worker/ only).

- sip/: the carrier's stand-in, a pjsua2 SIP caller and answerer, and the
  record of every caller number dialled;
- agents.py: the store's human agent as a livekit.rtc participant, room tokens;
- rooms.py: what the server API says about call rooms and the hold worker in them;
- analysis.py: recordings and signals (hold audio found by correlation, tones);
- stack.py: the local stack, provisioning, pid files, worker processes;
- scenario.py: one held call end to end and what both sides heard;
- demo.py: `make demo`.
"""
