"""The web console as a person uses it (README, "Web console"), in Chromium against the whole local stack.

Elements are found by role and accessible name, as a person (or a screen reader) finds them.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import httpx
import pytest
from playwright.async_api import Page, Request, Route, expect

from tests.browser.conftest import MIB, Stack

pytestmark = pytest.mark.e2e

#: ``DEPOT_SCREENSHOTS=docs make test`` refreshes the README's screenshots; unset, none are written.
SCREENSHOTS = os.environ.get("DEPOT_SCREENSHOTS", "")


async def screenshot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        await page.screenshot(path=str(Path(SCREENSHOTS) / name), full_page=True)


#: A document's stage once its bytes are stored (it may already be indexed by the time we look).
STORED_OR_LATER = re.compile("stored|indexed")


def owner(name: str) -> str:
    return f"{name}-{secrets.token_hex(3)}"


async def sign_in(page: Page, stack: Stack, who: str, *, admin: bool = False) -> None:
    await page.goto(stack.link(who, admin=admin))
    await expect(page.get_by_text(f"Signed in as {who}")).to_be_visible()


def documents(page: Page):  # type: ignore[no-untyped-def]
    return page.get_by_role("list", name="Documents").get_by_role("listitem")


def uploads(page: Page):  # type: ignore[no-untyped-def]
    return page.get_by_role("list", name="Uploads").get_by_role("listitem")


async def search_for(page: Page, query: str) -> None:
    box = page.get_by_role("searchbox", name="Search")
    await box.fill(query)
    await box.press("Enter")


def wait_searchable(stack: Stack, who: str, word: str, *, present: bool, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=10) as http:
        while True:
            hits = http.get(f"{stack.search}/v1/search", params={"q": word}, headers=stack.auth(who)).json()["hits"]
            if bool(hits) == present:
                return
            assert time.monotonic() < deadline, f"{word!r} {'never' if present else 'still'} searchable"
            time.sleep(0.2)


async def test_sign_in_by_link_keeps_the_token_for_the_tab_only_and_sign_out_forgets_it(
    console_stack: Stack, page: Page
) -> None:
    """The `depot token --link` link signs in, leaves the address bar clean, and sign-out forgets the token."""
    who = owner("alice")
    await sign_in(page, console_stack, who)
    assert "token" not in page.url
    assert await page.evaluate("sessionStorage.getItem('depot.token')")
    await page.reload()
    await expect(page.get_by_text(f"Signed in as {who}")).to_be_visible()
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await page.evaluate("sessionStorage.getItem('depot.token')") is None
    await page.reload()
    await expect(page.get_by_label("Bearer token")).to_be_visible()
    await page.get_by_label("Bearer token").fill("not-a-token")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("Your sign-in was refused")


async def test_three_uploads_name_the_duplicate_and_reach_indexed_live(
    console_stack: Stack, page: Page, files: Path
) -> None:
    """Three files: the later copy is named a duplicate before its bytes are sent, linked to the original; the
    others reach indexed live, and the status line counts what is in flight."""
    who = owner("alice")
    word = f"zebra{secrets.token_hex(3)}"
    (files / "notes.txt").write_text(f"minutes of the {word} migration meeting\n")
    (files / "budget.md").write_text("budget of the walrus project\n")
    (files / "copy-of-notes.txt").write_text(f"minutes of the {word} migration meeting\n")
    await sign_in(page, console_stack, who)
    await page.evaluate(  # every text the status line shows, however briefly
        """window.statusTexts = [];
        new MutationObserver(() => statusTexts.push(document.getElementById("status-line").textContent))
          .observe(document.getElementById("status-line"), {childList: true, characterData: true, subtree: true})"""
    )
    await page.get_by_label("Choose files").set_input_files([files / "notes.txt", files / "budget.md"])
    for name in ("notes.txt", "budget.md"):
        await expect(uploads(page).filter(has_text=name)).to_contain_text("Stored.")
    puts: list[str] = []
    page.on("request", lambda request: puts.append(request.url) if request.method == "PUT" else None)
    await page.get_by_label("Choose files").set_input_files([files / "copy-of-notes.txt"])
    duplicate = uploads(page).filter(has_text="copy-of-notes.txt")
    await expect(duplicate).to_contain_text("Duplicate")
    await expect(duplicate.get_by_role("link", name="notes.txt")).to_be_visible()
    assert puts == [], "no byte of the duplicate was sent"
    await duplicate.get_by_role("link", name="notes.txt").click()
    await expect(page.get_by_role("dialog", name="notes.txt")).to_contain_text("SHA-256")
    await page.get_by_role("button", name="Close").click()
    for name in ("notes.txt", "budget.md"):
        await expect(documents(page).filter(has_text=name)).to_contain_text(STORED_OR_LATER)
    await expect(documents(page)).to_have_count(2)
    await page.set_viewport_size({"width": 375, "height": 800})
    assert await page.evaluate("document.documentElement.scrollWidth") <= 375, "usable at 375 px: no sideways scroll"
    await page.set_viewport_size({"width": 1100, "height": 900})
    for name in ("notes.txt", "budget.md"):
        await expect(documents(page).filter(has_text=name)).to_contain_text("indexed", timeout=30_000)
    await expect(page.get_by_role("status").first).to_contain_text("Nothing of yours in flight")
    shown = await page.evaluate("window.statusTexts")
    assert any(re.search(r"2 of your documents in flight; the oldest has waited \d+ s", text) for text in shown)


async def test_search_highlights_and_delete_removes_from_list_and_search(
    console_stack: Stack, page: Page, files: Path
) -> None:
    """Search shows the word highlighted amid escaped text; a confirmed delete removes it from list and search."""
    who = owner("alice")
    word = f"okapi{secrets.token_hex(3)}"
    (files / "okapi <notes>.txt").write_text(f"field notes: if 5 < 7 & 9 > 8 then the {word} wins\n")
    await sign_in(page, console_stack, who)
    await page.get_by_label("Choose files").set_input_files([files / "okapi <notes>.txt"])
    await expect(documents(page).filter(has_text="okapi <notes>.txt")).to_contain_text(STORED_OR_LATER)
    wait_searchable(console_stack, who, word, present=True)
    await search_for(page, word)
    hit = page.get_by_role("list", name="Search results").get_by_role("listitem")
    await expect(hit).to_have_count(1)
    await expect(hit.locator("mark")).to_have_text(word)
    await expect(hit).to_contain_text(f"5 < 7 & 9 > 8 then the {word} wins")  # escaped text, shown as text
    await expect(hit.locator(".snippet > *")).to_have_count(1)  # the one <mark>: no element from the text
    await documents(page).filter(has_text="okapi <notes>.txt").get_by_role("button", name="Delete").click()
    confirm = page.get_by_role("dialog", name="Delete okapi <notes>.txt?")
    await confirm.get_by_role("button", name="Delete").click()
    await expect(documents(page)).to_have_count(0)
    await expect(hit).to_have_count(0)
    wait_searchable(console_stack, who, word, present=False)
    await search_for(page, word)
    await expect(page.get_by_text(f"0 result(s) for “{word}”")).to_be_visible()
    await page.reload()
    await expect(page.get_by_text("No documents yet")).to_be_visible()


async def test_large_file_goes_in_parts_and_resumes_after_a_reload(
    console_stack: Stack, page: Page, files: Path
) -> None:
    """A 30 MiB file is sent in parallel parts; reloaded mid-way and chosen again, only the missing parts travel."""
    who = owner("alice")
    big = files / "big.bin"
    big.write_bytes(secrets.token_bytes(30 * MIB))
    part_size = 8 * MIB
    sizes = {1: part_size, 2: part_size, 3: part_size, 4: 30 * MIB - 3 * part_size}
    first: list[int] = []
    lost: list[int] = []

    async def lose_parts_after_two(route: Route, request: Request) -> None:
        number = int(parse_qs(urlsplit(request.url).query)["partNumber"][0])
        if number <= 2:
            first.append(number)
            await route.continue_()
        else:
            lost.append(number)
            await route.abort("internetdisconnected")  # the network is gone for these parts

    s3 = console_stack.env["DEPOT_S3_ENDPOINT"]
    await sign_in(page, console_stack, who)
    await page.route(f"{s3}/**", lose_parts_after_two)
    finished: list[int] = []
    page.on("requestfinished", lambda request: finished.append(1) if request.method == "PUT" else None)
    await page.get_by_label("Choose files").set_input_files([big])
    item = uploads(page).filter(has_text="big.bin")
    await expect(item.get_by_role("progressbar")).to_be_visible()
    deadline = time.monotonic() + 30
    while len(finished) < 2:
        assert time.monotonic() < deadline, "the first two parts never finished"
        await asyncio.sleep(0.1)
    assert sorted(first) == [1, 2]
    assert {3, 4} <= set(lost), "four parts went out in parallel"
    await page.reload()  # still offline for S3 while the page goes away
    await page.unroute(f"{s3}/**")

    second: list[int] = []

    async def count(route: Route, request: Request) -> None:
        second.append(int(parse_qs(urlsplit(request.url).query)["partNumber"][0]))
        await route.continue_()

    await page.route(f"{s3}/**", count)
    await expect(documents(page).filter(has_text="big.bin")).to_contain_text("uploading")
    await page.get_by_label("Choose files").set_input_files([big])
    await expect(uploads(page).filter(has_text="big.bin")).to_contain_text("Stored", timeout=60_000)
    assert sorted(second) == [3, 4], "only the parts S3 did not hold were sent again"
    sent_first, sent_second = sum(sizes[n] for n in first), sum(sizes[n] for n in second)
    assert sent_second < 30 * MIB
    assert sent_first + sent_second == 30 * MIB
    await expect(documents(page).filter(has_text="big.bin")).to_contain_text(STORED_OR_LATER)


async def test_errors_are_explained_in_words(console_stack: Stack, page: Page, files: Path) -> None:
    """A file chosen with the keyboard over the limit, and a refused token, are explained; no byte is sent."""
    who = owner("alice")
    huge = files / "huge.bin"
    with huge.open("wb") as sparse:
        sparse.truncate(61 * MIB)
    await sign_in(page, console_stack, who)
    puts: list[str] = []
    page.on("request", lambda request: puts.append(request.url) if request.method in {"PUT", "POST"} else None)
    for _ in range(8):  # Tab through the header to the file chooser
        await page.keyboard.press("Tab")
        if await page.evaluate("document.activeElement.id") == "file-input":
            break
    async with page.expect_file_chooser() as chooser:
        await page.keyboard.press("Space")
    await (await chooser.value).set_files([huge])
    await expect(uploads(page).filter(has_text="huge.bin")).to_contain_text(
        "Too large: Depot accepts files up to 60 MiB"
    )
    assert puts == []
    await page.evaluate("sessionStorage.setItem('depot.token', 'expired')")
    await page.reload()
    await expect(page.get_by_role("alert")).to_contain_text("Your sign-in was refused")


async def test_another_owner_sees_none_of_it(console_stack: Stack, page: Page, files: Path) -> None:
    """Bob, signed in, sees neither alice's documents nor her search hits."""
    alice, bob = owner("alice"), owner("bob")
    word = f"tapir{secrets.token_hex(3)}"
    with httpx.Client(timeout=30) as http:
        created = http.post(
            f"{console_stack.api}/v1/documents",
            headers=console_stack.auth(alice),
            files={"file": ("tapir.txt", f"the {word} report".encode(), "text/plain")},
        )
        assert created.status_code == 201, created.text
    wait_searchable(console_stack, alice, word, present=True)
    await sign_in(page, console_stack, bob)
    await expect(page.get_by_text("No documents yet")).to_be_visible()
    await search_for(page, word)
    await expect(page.get_by_text(f"0 result(s) for “{word}”")).to_be_visible()
    await expect(page.get_by_text("tapir.txt")).to_have_count(0)


async def test_operations_view_is_for_admins_and_a_dry_run_shows_a_planted_orphan(
    console_stack: Stack, page: Page
) -> None:
    """A non-admin has no Operations view; an admin starts a dry run and reads the planted orphan in its findings."""
    await sign_in(page, console_stack, owner("carol"))
    await expect(page.locator("body[data-admin=no]")).to_have_count(1)
    await expect(page.get_by_role("button", name="Operations")).to_have_count(0)

    env = console_stack.env
    orphan = f"documents/{secrets.token_hex(16)}"
    boto3.client(
        "s3",
        endpoint_url=env["DEPOT_S3_ENDPOINT"],
        region_name=env["DEPOT_S3_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    ).put_object(Bucket=env["DEPOT_S3_BUCKET"], Key=orphan, Body=b"left behind")

    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, console_stack, owner("root"), admin=True)
    await page.get_by_role("button", name="Operations").click()
    await expect(page.get_by_role("heading", name="Pipeline health")).to_be_visible()
    await expect(page.get_by_text("Outbox backlog")).to_be_visible()
    await page.get_by_role("button", name="Start a dry run").click()
    classes = page.get_by_role("table", name="Findings by class")
    await expect(classes.get_by_role("row").filter(has_text="orphan_object")).to_contain_text("1", timeout=30_000)
    await expect(page.get_by_role("list", name="Findings")).to_contain_text(orphan)
    await expect(page.get_by_role("button", name="Apply this plan")).to_be_visible()


def s3_client(stack: Stack):  # type: ignore[no-untyped-def]
    env = stack.env
    return boto3.client(
        "s3",
        endpoint_url=env["DEPOT_S3_ENDPOINT"],
        region_name=env["DEPOT_S3_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def api_upload(stack: Stack, who: str, name: str, data: bytes, content_type: str = "text/plain") -> str:
    """A document stored through the API, with no console watching; its id."""
    with httpx.Client(timeout=30) as http:
        created = http.post(
            f"{stack.api}/v1/documents", headers=stack.auth(who), files={"file": (name, data, content_type)}
        )
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def named(items, name: str):  # type: ignore[no-untyped-def]
    """The item of ``items`` whose name is exactly ``name`` (report.txt, not copy-of-report.txt)."""
    return items.filter(has=items.page.locator(".doc-name", has_text=re.compile(f"^{re.escape(name)}$")))


async def drop(page: Page, paths: list[Path]) -> None:
    """Drop ``paths`` on the drop zone, as a person dragging them from a file manager does."""
    scratch = "drop-source"  # the test's own input: Playwright reads the files from disk into File objects
    await page.evaluate(
        """(id) => { if (document.getElementById(id)) return;
        const input = Object.assign(document.createElement("input"), {type: "file", multiple: true, id, hidden: true});
        document.body.append(input); }""",
        scratch,
    )
    await page.set_input_files(f"#{scratch}", paths)
    await page.evaluate(
        """(id) => { const carried = new DataTransfer();
        for (const file of document.getElementById(id).files) carried.items.add(file);
        const zone = document.getElementById("drop-zone");
        for (const type of ["dragenter", "dragover", "drop"])
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: carried, bubbles: true, cancelable: true})); }""",
        scratch,
    )


@pytest.mark.timeout(300)  # 50 MiB hashed, sent and indexed on a shared, loaded machine
async def test_walkthrough_five_files_dropped_at_once_reach_indexed_and_operations_is_healthy(
    console_stack: Stack, page: Page, files: Path
) -> None:
    """The issue's "done when": five files dropped together, one of 50 MiB and one a duplicate. Each shows
    progress, the duplicate is named (no byte of it sent), the 50 MiB one goes in parts, every other one reaches
    indexed live, search finds each, and the Operations view shows the pipeline's figures and a dry run; nothing
    the page asks for on the way is missing (404)."""
    who = owner("newcomer")
    words = {
        name: f"{stem}{secrets.token_hex(3)}"
        for name, stem in [
            ("report.txt", "quokka"),
            ("budget.md", "walrus"),
            ("minutes.txt", "okapi"),
            ("server-log.txt", "pangolin"),
        ]
    }
    (files / "report.txt").write_text(f"quarterly report: the {words['report.txt']} population grew\\n")
    (files / "budget.md").write_text(f"# Budget\\nthe {words['budget.md']} project costs 12 coins\\n")
    (files / "minutes.txt").write_text(f"minutes of the {words['minutes.txt']} meeting\\n")
    (files / "copy-of-report.txt").write_bytes((files / "report.txt").read_bytes())
    line = f"2026-12-01 GET /index.html 200 {words['server-log.txt']} served\\n".encode()
    (files / "server-log.txt").write_bytes(line * (50 * MIB // len(line)))
    big_size = (files / "server-log.txt").stat().st_size
    assert big_size > 49 * MIB
    stored = ["report.txt", "budget.md", "minutes.txt", "server-log.txt"]
    # a newcomer's browser console: no file the page asks for is missing (the favicon's request is the browser's,
    # seen only here); the non-admin's 403 from the reconciler is the admin probe, by design
    missing: list[str] = []
    page.on("console", lambda message: missing.append(message.text) if "404" in message.text else None)

    await sign_in(page, console_stack, who)
    await page.evaluate(  # every progress text each upload shows, however briefly
        """window.progressTexts = {};
        new MutationObserver(() => { for (const item of document.querySelectorAll("#uploads li")) {
          const name = item.querySelector(".doc-name")?.textContent; const meta = item.querySelector(".doc-meta");
          if (name && meta) (progressTexts[name] ??= []).push(meta.textContent); } })
          .observe(document.getElementById("uploads"), {childList: true, characterData: true, subtree: true})"""
    )
    puts: list[str] = []
    page.on("request", lambda request: puts.append(request.url) if request.method == "PUT" else None)
    started = time.monotonic()
    await drop(page, [files / name for name in [*stored[:2], "copy-of-report.txt", *stored[2:]]])
    for name in stored:
        item = named(uploads(page), name)
        await expect(item).to_contain_text("Stored.", timeout=120_000)
        await expect(item.get_by_role("progressbar", name=f"Progress of {name}")).to_have_attribute(
            "value", str((files / name).stat().st_size)
        )
    duplicate = named(uploads(page), "copy-of-report.txt")
    await expect(duplicate).to_contain_text("Duplicate")
    await expect(duplicate).to_contain_text("Nothing was sent.")
    await expect(duplicate.get_by_role("link", name="report.txt")).to_be_visible()
    progress = await page.evaluate("window.progressTexts")
    assert any(re.search(r" of 50 MiB · .+/s", text) for text in progress["server-log.txt"]), progress
    parts = [url for url in puts if "partNumber=" in url]
    assert len(parts) == -(-big_size // (8 * MIB)), "the 50 MiB file went in 8 MiB parts"
    assert len(puts) == len(parts) + 3, "one PUT per small file; none for the duplicate"
    for name in stored:
        await expect(named(documents(page), name)).to_contain_text("indexed", timeout=60_000)
    indexed_after = time.monotonic() - started
    await expect(documents(page)).to_have_count(4)
    for name, word in words.items():
        await search_for(page, word)
        hit = page.get_by_role("list", name="Search results").get_by_role("listitem")
        await expect(hit).to_have_count(1)
        await expect(hit.get_by_role("button", name=f"Details of {name}")).to_be_visible()
        await expect(hit.locator("mark").first).to_have_text(word)
    await page.get_by_role("button", name="Clear").click()
    await expect(page.get_by_role("status").first).to_contain_text("Nothing of yours in flight")
    await screenshot(page, "console-upload.png")
    assert indexed_after < 120, f"five files dropped → four indexed in {indexed_after:.1f} s"

    await page.get_by_role("button", name="Sign out").click()
    await sign_in(page, console_stack, owner("root"), admin=True)
    await page.get_by_role("button", name="Operations").click()
    for table in ("Outboxes", "Consumer lag", "Dead-letter queues"):
        await expect(page.get_by_role("heading", name=table)).to_be_visible()
    await expect(page.locator("#health")).to_contain_text("depot.documents.v1")
    await expect(page.locator("#health")).to_contain_text("depot-indexer")
    await page.get_by_role("button", name="Start a dry run").click()
    await expect(page.locator("#run")).to_contain_text("Status: planned", timeout=30_000)
    await expect(page.get_by_role("table", name="Findings by class")).to_be_visible()
    await screenshot(page, "console-operations.png")
    assert missing == [], "every file the page asks for exists"


async def test_after_a_reload_documents_indexed_unseen_show_indexed(console_stack: Stack, page: Page) -> None:
    """Documents indexed while no console watched (stored through the API) show indexed on sign-in and after a
    reload, from the search API's index entries, and one whose text could not be extracted says so; a document
    still uploading shows uploading. Those the index does not hold yet show stored and count as in flight in the
    status line."""
    who = owner("dora")
    word = f"heron{secrets.token_hex(3)}"
    ids = [
        api_upload(console_stack, who, f"{name}.txt", f"{name} about the {word}".encode()) for name in ("one", "two")
    ]
    broken_pdf = f"{word}.pdf"  # findable by its filename only
    api_upload(console_stack, who, broken_pdf, b"%PDF-1.7 not the bytes of a PDF", "application/pdf")
    with httpx.Client(timeout=30) as http:
        pending = http.post(
            f"{console_stack.api}/v1/uploads",
            headers=console_stack.auth(who),
            json={"filename": "half.bin", "size_bytes": 10, "sha256": "ab" * 32, "content_type": None},
        )
        assert pending.status_code == 201, pending.text
    deadline = time.monotonic() + 30
    with httpx.Client(timeout=10) as http:
        while (
            len(
                http.get(
                    f"{console_stack.search}/v1/search", params={"q": word}, headers=console_stack.auth(who)
                ).json()["hits"]
            )
            < 3
        ):
            assert time.monotonic() < deadline, "never indexed"
            time.sleep(0.2)
    await sign_in(page, console_stack, who)
    for attempt in ("signed in", "reloaded"):
        for name in ("one.txt", "two.txt"):
            await expect(documents(page).filter(has_text=name), attempt).to_contain_text("indexed")
        await expect(documents(page).filter(has_text="half.bin")).to_contain_text("uploading")
        await expect(documents(page).filter(has_text=broken_pdf), attempt).to_contain_text(
            "text not extracted: pdf_unreadable"
        )
        await page.reload()
        await expect(page.get_by_text(f"Signed in as {who}")).to_be_visible()
    assert ids

    async def index_holds_none(route: Route) -> None:  # as if the indexer had not reached them yet
        await route.fulfill(response=await route.fetch(), json={"items": []})

    await page.route("**/v1/index/entries?*", index_holds_none)
    await page.reload()
    for name in ("one.txt", "two.txt"):
        await expect(documents(page).filter(has_text=name)).to_contain_text("stored")
    # the three stored documents and the pending upload are in flight
    await expect(page.get_by_role("status").first).to_contain_text("4 of your documents in flight")


async def test_without_webassembly_files_go_through_the_api_and_a_duplicate_is_still_named(
    console_stack: Stack, page: Page, files: Path
) -> None:
    """With WebAssembly disabled nothing is hashed: each file is POSTed to /v1/documents (no presigned create, no
    PUT to S3) and stored; the same content again is named a duplicate by the API, saying its bytes were sent."""
    await page.add_init_script("delete globalThis.WebAssembly")
    who = owner("erin")
    (files / "plain.txt").write_text("no hashing in this browser\n")
    (files / "again.txt").write_text("no hashing in this browser\n")
    await sign_in(page, console_stack, who)
    assert await page.evaluate("typeof WebAssembly") == "undefined"
    calls: list[str] = []
    page.on("request", lambda request: calls.append(f"{request.method} {urlsplit(request.url).path}"))
    await page.get_by_label("Choose files").set_input_files([files / "plain.txt"])
    await expect(uploads(page).filter(has_text="plain.txt")).to_contain_text("Stored.")
    await expect(documents(page).filter(has_text="plain.txt")).to_contain_text(STORED_OR_LATER)
    await page.get_by_label("Choose files").set_input_files([files / "again.txt"])
    duplicate = uploads(page).filter(has_text="again.txt")
    await expect(duplicate).to_contain_text("Duplicate")
    await expect(duplicate).to_contain_text("It was sent (this browser cannot check first) but not stored twice.")
    await expect(duplicate.get_by_role("link", name="plain.txt")).to_be_visible()
    sent = [call for call in calls if call.startswith(("POST", "PUT"))]
    assert sent == ["POST /v1/documents", "POST /v1/documents"], sent
    await expect(documents(page)).to_have_count(1)


async def test_download_gives_back_the_same_bytes(console_stack: Stack, page: Page, files: Path) -> None:
    """Download, from the list and from the details, saves exactly the bytes that were uploaded, under its name."""
    who = owner("finn")
    data = secrets.token_bytes(3 * MIB + 17)
    (files / "photo.raw").write_bytes(data)
    await sign_in(page, console_stack, who)
    await page.get_by_label("Choose files").set_input_files([files / "photo.raw"])
    await expect(documents(page).filter(has_text="photo.raw")).to_contain_text(STORED_OR_LATER)
    async with page.expect_download() as listed:
        await page.get_by_role("button", name="Download photo.raw").click()
    download = await listed.value
    assert download.suggested_filename == "photo.raw"
    assert Path(await download.path()).read_bytes() == data
    await page.get_by_role("button", name="Details of photo.raw").click()
    async with page.expect_download() as detailed:
        await page.get_by_role("dialog", name="photo.raw").get_by_role("button", name="Download").click()
    assert Path(await (await detailed.value).path()).read_bytes() == data


async def test_apply_is_refused_by_the_safety_stop_and_forced_only_after_a_confirmation(
    console_stack: Stack, page: Page
) -> None:
    """Planted orphans beyond DEPOT_RECONCILE_MAX_FRACTION: Apply is refused with the safety stop explained; Force
    apply asks first (Cancel changes nothing), and confirmed, the run is applied."""
    orphans = [f"documents/{secrets.token_hex(16)}" for _ in range(8)]
    s3 = s3_client(console_stack)
    for key in orphans:
        s3.put_object(Bucket=console_stack.env["DEPOT_S3_BUCKET"], Key=key, Body=b"left behind")
    await sign_in(page, console_stack, owner("root"), admin=True)
    await page.get_by_role("button", name="Operations").click()
    await page.get_by_role("button", name="Start a dry run").click()
    classes = page.get_by_role("table", name="Findings by class")
    await expect(classes.get_by_role("row").filter(has_text="orphan_object")).to_be_visible(timeout=30_000)
    await expect(page.locator("#run")).to_contain_text("Status: planned")
    await page.get_by_role("button", name="Apply this plan").click()
    stop = page.get_by_role("alert").filter(has_text="Safety stop")
    await expect(stop).to_contain_text("Safety stop: not applied")
    await expect(stop).to_contain_text("more than 5.0 %")
    await expect(stop).to_contain_text("DEPOT_RECONCILE_MAX_FRACTION")
    await stop.get_by_role("button", name="Force apply…").click()
    confirm = page.get_by_role("dialog", name="Apply despite the safety stop?")
    await confirm.get_by_role("button", name="Cancel").click()
    await expect(confirm).to_be_hidden()
    await expect(page.locator("#run")).to_contain_text("Status: planned")
    await stop.get_by_role("button", name="Force apply…").click()
    await confirm.get_by_role("button", name="Apply anyway").click()
    await expect(page.locator("#run")).to_contain_text("Status: applied", timeout=30_000)
    await expect(page.get_by_role("list", name="Findings")).to_contain_text(orphans[0])
