"""The web console in a real browser: `make dev`'s stack as processes, driven by Debian's Chromium.

Playwright for Python drives the Chromium of the `chromium` Debian package (``make test``
installs it; ``DEPOT_CHROMIUM`` names another binary). ``playwright install`` is never run:
Playwright's own browser builds are not used.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright

from depot_common.auth import mint_token
from depot_devstack import servers

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MIB = 1024 * 1024
#: Small enough that the test's 61 MiB file is refused, large enough for the walkthrough's 50 MiB one.
MAX_UPLOAD_BYTES = 60 * MIB


@dataclass(frozen=True)
class Stack:
    env: dict[str, str]

    @property
    def api(self) -> str:
        return self.env["DEPOT_API_URL"]

    @property
    def search(self) -> str:
        return self.env["DEPOT_SEARCH_URL"]

    def token(self, owner: str, *, admin: bool = False) -> str:
        return mint_token(self.env["DEPOT_JWT_SECRET"], owner, admin=admin, ttl=3600)

    def link(self, owner: str, *, admin: bool = False) -> str:
        """The sign-in link `depot token --owner OWNER --link` prints."""
        result = subprocess.run(
            [sys.executable, "-m", "depot_common.cli", "token", "--owner", owner, "--link", *(["--admin"] * admin)],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout.strip()

    def auth(self, owner: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(owner)}"}


@pytest.fixture(scope="module")
def console_stack(postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """`python -m depot_devstack` on free ports with its own database; stopped (SIGTERM) after the module, so
    its processes and PostgreSQL connections do not outlive the browser tests."""
    tmp = tmp_path_factory.mktemp("console")
    name = f"depot_console_{secrets.token_hex(4)}"
    database = servers.recreate_database(postgres_admin_url, name)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DEPOT_")},
        "DEPOT_DATABASE_URL": database,
        "DEPOT_API_PORT": str(servers.free_port()),
        "DEPOT_SEARCH_PORT": str(servers.free_port()),
        "DEPOT_RECONCILER_PORT": str(servers.free_port()),
        "DEPOT_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
        "DEPOT_CONSUMER_SESSION_TIMEOUT": "2",
        "DEPOT_RECONCILE_GRACE": "0",
        "DEPOT_RECONCILE_INTERVAL": "0",
    }
    state = tmp / "devstack"
    log_path = tmp / "devstack.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "depot_devstack", "--state-dir", str(state), "--quiet"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 120
        while not (state / "pids").exists():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "devstack did not come up within 120 s"
            time.sleep(0.2)
        lines = (state / "env").read_text().splitlines()
        yield Stack(dict(line.split("=", 1) for line in lines if line and not line.startswith("#")))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        servers.drop_database(postgres_admin_url, name)


def chromium_path() -> str:
    path = os.environ.get("DEPOT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(path, os.X_OK):
        pytest.fail(
            f"no Chromium at {path}: `make test` installs Debian's chromium package (apt-get install chromium), "
            "or set DEPOT_CHROMIUM=/path/to/chromium"
        )
    return path


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, started once for the module."""
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser profile (its own sessionStorage) per test."""
    context = await browser.new_context(viewport={"width": 1100, "height": 900}, accept_downloads=True)
    context.set_default_timeout(20_000)
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def page(context: BrowserContext) -> AsyncIterator[Page]:
    """A page whose script errors fail the test."""
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    assert errors == [], f"the console threw: {errors}"


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return tmp_path
