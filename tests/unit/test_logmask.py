from __future__ import annotations

import io
import json
import logging

from worker.logmask import MaskCallerNumbers, mask_text


def test_mask_text() -> None:
    assert (
        mask_text("room call-_+15551230001_Jm8DsGjEnxfx") == "room call-_+1555***0001_Jm8DsGjEnxfx"
    )
    assert mask_text("sip_+442071838750 joined") == "sip_+4420***8750 joined"
    assert mask_text("ts 1795735061464 port 5060") == "ts 1795735061464 port 5060"  # not E.164


def test_filter_masks_message_args_and_fields() -> None:
    buf = io.StringIO()
    h = logging.StreamHandler(buf)
    h.setFormatter(logging.Formatter("%(message)s %(room)s %(extra_json)s"))
    h.addFilter(MaskCallerNumbers())
    log = logging.getLogger("test-mask")
    log.addHandler(h)
    log.propagate = False
    log.warning(
        "caller %s joined",
        "+15551230001",
        extra={"room": "call-_+15551230001_x", "extra_json": json.dumps({"n": "+15551230001"})},
    )
    out = buf.getvalue()
    assert "+15551230001" not in out
    assert out.count("+1555***0001") == 3
