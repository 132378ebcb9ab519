"""The desk serves the agents' console (console/, built by `make setup`):
the page at /, its files under /console/, with a Content-Security-Policy that
lets the page reach only the desk and the LiveKit server; without a built
console, / is a one-line 404 that names the fix."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from tests.integration.test_desk import LK, make_desk, serving
from worker.registry import Registry


def built(tmp_path: Path) -> Path:
    d = tmp_path / "dist"
    d.mkdir()
    (d / "index.html").write_text('<!doctype html><script src="/console/app.js"></script>')
    (d / "app.js").write_text("console.log('hi')")
    return d


async def test_the_console_is_served_with_its_policy(registry: Registry, tmp_path: Path) -> None:
    desk = make_desk(registry, console=built(tmp_path))
    async with serving(desk) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/") as r:
            page, page_status, page_headers = await r.text(), r.status, r.headers
        async with http.get(f"{url}/console/app.js") as r:
            js, js_status, js_headers = await r.text(), r.status, r.headers
        async with http.get(f"{url}/console/../../etc/passwd") as r:
            escape = r.status
        async with http.get(f"{url}/console/nope.js") as r:
            missing = r.status
        async with http.get(f"{url}/health") as r:
            health_csp = r.headers.get("Content-Security-Policy")
    assert page_status == 200 and "/console/app.js" in page
    assert page_headers["Content-Type"].startswith("text/html")
    csp = page_headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert f"connect-src 'self' {LK.url} http://127.0.0.1:7880;" in csp
    assert page_headers["Referrer-Policy"] == "no-referrer"
    assert js_status == 200 and js == "console.log('hi')"
    assert js_headers["Content-Security-Policy"] == csp
    assert js_headers["X-Content-Type-Options"] == "nosniff"
    assert escape in (403, 404)
    assert missing == 404
    assert health_csp is None  # the API's answers are not the console's


async def test_no_console_built_is_one_line_404(registry: Registry, tmp_path: Path) -> None:
    desk = make_desk(registry, console=tmp_path / "not-built")
    async with serving(desk) as url, aiohttp.ClientSession() as http:
        async with http.get(f"{url}/") as r:
            status, body = r.status, await r.json()
        async with http.get(f"{url}/health") as r:
            health = r.status
    assert status == 404
    page = tmp_path / "not-built" / "index.html"
    assert body == {"error": f"the console is not built ({page}): run make setup"}
    assert health == 200
