"""The carrier's stand-in over SIP (pjsua2): ``caller`` places a call,
``answerer`` takes one (for the caller's own loopback tests), ``ua`` is what
both share, ``dialled`` records every caller number for the e2e log scan."""
