"""The upload API serves the web console (README, "Web console"): its files, its config, a strict CSP, bucket CORS."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import httpx

from depot_upload.bootstrap import build_app
from depot_upload.console.endpoints import STATIC
from depot_upload.settings import UploadSettings
from tests.conftest import serve

SEARCH = "https://search.example.test"
RECONCILER = "https://ops.example.test:8443"
CONSOLE = "http://console.example.test"


def csp_directives(header: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in header.split(";") if part.strip())}


async def test_console_files_config_and_strict_csp(
    make_settings: Callable[..., Any], s3_endpoint: str, s3: Any
) -> None:
    """`/` and `/console/*` carry a CSP allowing only this origin, the configured APIs and S3; config names the APIs."""
    settings: UploadSettings = make_settings(
        UploadSettings,
        public_search_url=SEARCH + "/",
        public_reconciler_url=RECONCILER,
        s3_cors_origins=CONSOLE,
    )
    async with serve(build_app(settings)) as base, httpx.AsyncClient(base_url=base) as http:
        page = await http.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        csp = csp_directives(page.headers["content-security-policy"])
        assert csp["default-src"] == ["'none'"]
        assert csp["script-src"] == ["'self'", "'wasm-unsafe-eval'"]
        assert csp["style-src"] == ["'self'"]
        assert csp["frame-ancestors"] == ["'none'"]
        assert set(csp["connect-src"]) == {"'self'", SEARCH, RECONCILER, s3_endpoint}
        assert page.headers["x-content-type-options"] == "nosniff"

        script = await http.get("/console/app.js")
        assert script.status_code == 200
        assert "javascript" in script.headers["content-type"]
        assert script.headers["content-security-policy"] == page.headers["content-security-policy"]

        config = (await http.get("/console/config.json")).json()
        assert config == {
            "search_url": SEARCH,
            "reconciler_url": RECONCILER,
            "part_size": settings.part_size,
            "max_upload_bytes": settings.max_upload_bytes,
        }
        missing_api = await http.get("/v1/no-such-route")
        assert missing_api.status_code == 404
        assert missing_api.json()["error"] == "not_found"
        assert (await http.get("/console/no-such-file.js")).status_code == 404

    cors = await s3.get_bucket_cors(Bucket=settings.s3_bucket)
    (rule,) = cors["CORSRules"]
    assert rule["AllowedOrigins"] == [CONSOLE]
    assert "PUT" in rule["AllowedMethods"]
    assert rule["ExposeHeaders"] == ["ETag"]


def test_console_files_have_no_inline_script_style_or_html_injection() -> None:
    """The page has no inline script, style or handler, and no script writes HTML from strings."""
    page = (STATIC / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", page) == []
    assert "<style" not in page
    assert not re.search(r"\sstyle=", page)
    assert not re.search(r"\son[a-z]+=", page)
    for script in STATIC.glob("*.js"):
        source = script.read_text()
        for sink in (r"\.innerHTML\b", r"\.outerHTML\b", r"insertAdjacentHTML\(", r"document\.write", r"\beval\("):
            assert not re.search(sink, source), f"{script.name} uses {sink}"
