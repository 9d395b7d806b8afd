"""The review page in a real headless Chromium: sign in, decide by click and by key, read the decisions back
from the page, from the queue and from `garmentseg review list --json`. Plus its refusals over HTTP."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from click.testing import CliRunner

from garmentseg.config import load_config
from garmentseg.deploy import free_port
from garmentseg.imageio import write_png
from garmentseg.review.store import MAX_ITEM_ID, ReviewQueue, reviewer_name
from garmentseg.review.web import SESSION_COOKIE, Sessions, create_app, mask_edge

TOKEN = "review-token-for-tests"
REVIEWER = "Ana Retoucher"
ESTIMATES = (0.91, 0.62, 0.78)  # queued in this order; the page lists them worst first


def _garment(folder: Path, seed: int) -> tuple[str, Path, Path]:
    """A tiny shot (a coloured box on grey) and a cutout of it, named by the data contract."""
    name = f"{uuid.UUID(int=seed + 1)}_Front"
    shot = np.full((48, 32, 3), 200, np.uint8)
    shot[10:40, 6:26] = (40 * seed % 255, 90, 160)
    alpha = np.zeros((48, 32), np.uint8)
    alpha[10:40, 6:26] = 255
    write_png(folder / "raw" / f"{name}.png", shot)
    write_png(folder / "cutouts" / f"{name}.png", np.dstack([shot, alpha]))
    return name, folder / "raw" / f"{name}.png", folder / "cutouts" / f"{name}.png"


@pytest.fixture
def review_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The queue's database and storage in tmp, as the environment overrides every command reads."""
    env = {
        "GARMENTSEG__REVIEW__DATABASE": f"sqlite:///{tmp_path}/queue.db",
        "GARMENTSEG__REVIEW__STORAGE_DIR": str(tmp_path / "items"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def queue(review_env: dict[str, str], tmp_path: Path) -> ReviewQueue:  # noqa: ARG001 - sets the environment
    queue = ReviewQueue.from_config(load_config("demo"))
    for seed, estimate in enumerate(ESTIMATES):
        name, shot, cutout = _garment(tmp_path / "caller" / str(seed), seed)
        queue.record(
            file=name,
            shot=shot,
            cutout=cutout,
            estimate=estimate,
            model_version="3",
            source="test",
        )
    return queue


@pytest.fixture
def page_url(queue: ReviewQueue) -> Iterator[str]:
    """The review page served by uvicorn on a free port, in this process."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(queue, TOKEN), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the review page did not start within 20 s"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def _click_through(browser, element) -> None:
    """Click a link or submit button and wait for the next page: a click returns before the navigation it
    starts has replaced the document, so a lookup right after it may still read the old page."""
    from selenium.webdriver.support.ui import WebDriverWait

    element.click()
    WebDriverWait(browser, 10).until(lambda _browser: _gone(element))


def _gone(element) -> bool:
    """Whether the page that held `element` has been replaced. Chromium says so with a stale reference, or,
    when the old document is torn down mid-lookup, with "Node ... does not belong to the document"
    (selenium's staleness_of knows only the first, and the second failed a CI run)."""
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException

    try:
        element.is_enabled()
    except StaleElementReferenceException:
        return True
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            return True
        raise
    return False


def _sign_in(browser, url: str, token: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{url}/login")
    browser.find_element(By.ID, "name").send_keys(REVIEWER)
    browser.find_element(By.ID, "token").send_keys(token)
    _click_through(browser, browser.find_element(By.ID, "sign-in"))


def _images_loaded(browser) -> bool:
    return browser.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0) && document.images.length > 0"
    )


def test_reviewer_signs_in_and_decides_by_click_and_by_key(
    chromium, page_url: str, queue: ReviewQueue
) -> None:
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    chromium.get(page_url)
    assert chromium.current_url.endswith("/login")  # no session: the page asks for one
    _sign_in(chromium, page_url, "not-the-token")
    assert "Wrong token" in chromium.find_element(By.ID, "error").text
    assert chromium.get_cookies() == []

    _sign_in(chromium, page_url, TOKEN)
    (cookie,) = chromium.get_cookies()
    assert cookie["name"] == SESSION_COOKIE and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert chromium.execute_script("return document.cookie") == ""  # out of reach of the page's scripts
    assert chromium.find_element(By.ID, "reviewer").text == REVIEWER

    rows = chromium.find_elements(By.CSS_SELECTOR, "#queue tbody tr")
    estimates = [float(r.get_attribute("data-estimate")) for r in rows]
    assert estimates == sorted(ESTIMATES)
    worst, middle, best = (queue.items()[i] for i in range(3))
    assert _images_loaded(chromium)

    _click_through(chromium, rows[0].find_element(By.LINK_TEXT, worst.file))
    assert chromium.find_element(By.ID, "item").get_attribute("data-id") == str(worst.id)
    WebDriverWait(chromium, 10).until(_images_loaded)
    _click_through(chromium, chromium.find_element(By.ID, "accept"))  # by click: on to the next pending item
    notice = chromium.find_element(By.ID, "last-decision").text
    assert f"#{worst.id}" in notice and f"accepted by {REVIEWER}" in notice
    assert chromium.find_element(By.ID, "item").get_attribute("data-id") == str(middle.id)

    chromium.find_element(By.TAG_NAME, "body").send_keys("r")  # by key: send to retouch
    # The key starts a navigation: the notice found may belong to the page being replaced (stale).
    WebDriverWait(chromium, 10, ignored_exceptions=(WebDriverException,)).until(
        lambda b: f"#{middle.id}" in b.find_element(By.ID, "last-decision").text
    )
    assert f"retouch by {REVIEWER}" in chromium.find_element(By.ID, "last-decision").text

    chromium.get(page_url)
    shown = {
        int(r.get_attribute("id").split("-")[1]): (
            r.find_element(By.CLASS_NAME, "state").text,
            r.find_element(By.CLASS_NAME, "decided-by").text,
            r.find_element(By.CLASS_NAME, "decided-at").text,
        )
        for r in chromium.find_elements(By.CSS_SELECTOR, "#queue tbody tr")
    }
    assert shown[worst.id][:2] == ("accepted", REVIEWER) and shown[worst.id][2].endswith("UTC")
    assert shown[middle.id][:2] == ("retouch", REVIEWER)
    assert shown[best.id] == ("pending", "", "")

    stored = {i.id: (i.state, i.decided_by) for i in queue.items()}
    assert stored == {
        worst.id: ("accepted", REVIEWER),
        middle.id: ("retouch", REVIEWER),
        best.id: ("pending", None),
    }
    from garmentseg.review.cli import review

    listed = CliRunner().invoke(review, ["list", "--json"])
    assert listed.exit_code == 0, listed.output
    by_id = {i["id"]: i for i in json.loads(listed.output)["items"]}
    assert (by_id[worst.id]["state"], by_id[worst.id]["decided_by"]) == ("accepted", REVIEWER)
    assert (by_id[middle.id]["state"], by_id[middle.id]["decided_by"]) == ("retouch", REVIEWER)
    assert by_id[best.id]["state"] == "pending" and by_id[best.id]["decided_at"] is None


@pytest.fixture
def client(page_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=page_url, follow_redirects=False, timeout=30) as http:
        yield http


def _signed_in(client: httpx.Client) -> httpx.Client:
    answer = client.post("/login", data={"token": TOKEN, "name": f"  {REVIEWER} "})
    assert answer.status_code == 303
    return client


def test_wrong_token_is_refused_without_a_cookie(client: httpx.Client) -> None:
    answer = client.post("/login", data={"token": "guess", "name": REVIEWER})
    assert answer.status_code == 401 and "set-cookie" not in answer.headers
    assert "Wrong token" in answer.text
    nameless = client.post("/login", data={"token": TOKEN, "name": "   "})
    assert nameless.status_code == 400 and "set-cookie" not in nameless.headers


def test_without_a_session_nothing_is_shown_or_decided(client: httpx.Client, queue: ReviewQueue) -> None:
    item = queue.items()[0]
    assert client.get("/").headers["location"] == "/login"
    assert client.get(f"/items/{item.id}").status_code == 303
    assert client.get(f"/items/{item.id}/shot.png").status_code == 401
    assert client.post(f"/items/{item.id}", data={"decision": "accept"}).status_code == 401
    forged = Sessions.for_token("another-token").issue(REVIEWER)
    client.cookies.set(SESSION_COOKIE, forged)
    assert client.post(f"/items/{item.id}", data={"decision": "accept"}).status_code == 401
    assert queue.get(item.id).state == "pending"


def test_a_session_cookie_is_signed_and_expires() -> None:
    sessions = Sessions.for_token(TOKEN)
    cookie = sessions.issue("Bo", now=1000.0)
    assert sessions.reviewer(cookie, now=1001.0) == "Bo"
    assert sessions.reviewer(cookie, now=1000.0 + 13 * 3600) is None  # a working day later
    encoded, expiry, nonce, signature = cookie.split(".")
    assert sessions.reviewer(f"{encoded}.{int(expiry) + 999999}.{nonce}.{signature}", now=1001.0) is None
    assert sessions.issue("Bo", now=1000.0) != cookie, "each sign-in its own cookie, to sign out of alone"
    assert sessions.reviewer(cookie.replace(encoded, "QWxpY2U="), now=1001.0) is None
    assert sessions.reviewer(None) is None and sessions.reviewer("garbage") is None


def test_bad_decisions_are_refused_with_the_reason(client: httpx.Client, queue: ReviewQueue) -> None:
    _signed_in(client)
    item = queue.items()[0]
    bad = client.post(f"/items/{item.id}", data={"decision": "approve"})
    assert bad.status_code == 400 and "&#39;approve&#39; is not one of accept, retouch, reject" in bad.text
    assert client.post("/items/9999", data={"decision": "accept"}).status_code == 404
    assert client.get("/items/9999").status_code == 404
    assert client.get(f"/items/{item.id}?decided=9999").status_code == 200  # a stale notice is dropped
    assert client.get("/?state=lost").status_code == 400
    queue.close([item.id], by="import")
    closed = client.post(f"/items/{item.id}", data={"decision": "reject"})
    assert closed.status_code == 409 and "closed" in closed.text
    assert queue.get(item.id).state == "closed"


@pytest.mark.parametrize(
    "item_id",
    ["99999999999999999999999", str(MAX_ITEM_ID + 1), str(MAX_ITEM_ID), "1" * 5000, "\u00b2", "\u0661", "x"],
)
def test_an_id_no_item_can_have_is_not_found(client: httpx.Client, queue: ReviewQueue, item_id: str) -> None:
    _signed_in(client)  # "\u0661" is Arabic-Indic one: int() reads it as 1, an item the queue has
    assert client.get(f"/items/{item_id}").status_code == 404
    assert client.post(f"/items/{item_id}", data={"decision": "accept"}).status_code == 404
    assert client.get(f"/items/{item_id}/shot.png").status_code == 404
    assert {i.state for i in queue.items()} == {"pending"}


def test_a_garbled_decided_notice_is_dropped(client: httpx.Client, queue: ReviewQueue) -> None:
    _signed_in(client)
    item = queue.items()[0]
    for decided in ("\u00b2", "99999999999999999999999", "-1", "1" * 5000):
        answer = client.get(f"/items/{item.id}", params={"decided": decided})
        assert answer.status_code == 200 and 'id="last-decision"' not in answer.text


def _own_origin(client: httpx.Client) -> str:
    return str(client.base_url).rstrip("/")


def _elsewhere(client: httpx.Client) -> str:
    """Another port on the same host: the same site, so a SameSite=Strict cookie still goes along."""
    return f"http://127.0.0.1:{client.base_url.port + 1}"


def test_a_post_from_another_origin_is_refused(client: httpx.Client, queue: ReviewQueue) -> None:
    item = queue.items()[0]
    login = {"token": TOKEN, "name": REVIEWER}
    forged_login = client.post("/login", data=login, headers={"Origin": _elsewhere(client)})
    assert forged_login.status_code == 403 and "set-cookie" not in forged_login.headers
    assert _elsewhere(client) in forged_login.text
    _signed_in(client)
    accept = {"decision": "accept"}
    for headers in (
        {"Origin": _elsewhere(client)},
        {"Origin": "null"},
        {"Origin": f"https://{client.base_url.host}:{client.base_url.port}"},  # another scheme
        {"Referer": f"{_elsewhere(client)}/items/{item.id}"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": _own_origin(client), "Sec-Fetch-Site": "cross-site"},
    ):
        refused = client.post(f"/items/{item.id}", data=accept, headers=headers)
        assert refused.status_code == 403 and "refused" in refused.text, headers
    assert queue.get(item.id).state == "pending"
    logout = client.post("/logout", headers={"Origin": _elsewhere(client)})
    assert logout.status_code == 403 and "set-cookie" not in logout.headers

    same = {"Origin": _own_origin(client), "Sec-Fetch-Site": "same-origin"}
    assert client.post(f"/items/{item.id}", data=accept, headers=same).status_code == 303
    referred = {"Referer": f"{_own_origin(client)}/items/{item.id}"}
    assert client.post(f"/items/{item.id}", data={"decision": "reject"}, headers=referred).status_code == 303
    assert queue.get(item.id).state == "rejected"
    assert client.post("/logout", headers=same).status_code == 303


def test_a_decision_records_the_signed_in_name(client: httpx.Client, queue: ReviewQueue) -> None:
    _signed_in(client)
    item = queue.items()[1]
    answer = client.post(f"/items/{item.id}", data={"decision": "reject"})
    assert answer.status_code == 303 and answer.headers["location"].endswith(f"?decided={item.id}")
    decided = queue.get(item.id)
    assert (decided.state, decided.decided_by) == ("rejected", REVIEWER)
    page = client.get(f"/items/{item.id}")
    assert "rejected" in page.text and REVIEWER in page.text


def test_images_are_served_and_the_edge_drawn(client: httpx.Client, queue: ReviewQueue) -> None:
    from garmentseg.imageio import decode

    _signed_in(client)
    item = queue.items()[0]
    assert client.get(f"/items/{item.id}/shot.png").content == item.shot_path.read_bytes()
    assert client.get(f"/items/{item.id}/cutout.png").content == item.cutout_path.read_bytes()
    edge = decode(client.get(f"/items/{item.id}/edge.png").content, max_pixels=10_000)
    magenta = np.all(edge == (255, 0, 200), axis=-1)
    assert magenta[10, 15] and magenta[25, 6] and not magenta[25, 15] and not magenta[2, 2]
    thumb = decode(client.get(f"/items/{item.id}/thumb.png").content, max_pixels=10_000, alpha=True)
    assert thumb.shape == (96, 64, 4) and thumb[48, 32, 3] == 255 and thumb[2, 2, 3] == 0
    assert client.get(f"/items/{item.id}/mask.png").status_code == 404


def test_the_page_loads_nothing_from_outside(client: httpx.Client, queue: ReviewQueue) -> None:
    _signed_in(client)
    pages = [
        client.get("/").text,
        client.get(f"/items/{queue.items()[0].id}").text,
        client.get("/login").text,
    ]
    for static in ("review.css", "review.js"):
        pages.append(client.get(f"/static/{static}").text)
    assert not any(marker in page for page in pages for marker in ("http://", "https://", "//cdn"))


def test_names_are_trimmed_and_bounded() -> None:
    assert reviewer_name("  Ana   Retoucher ") == "Ana Retoucher"
    for bad in ("", "   ", "x" * 65, "Ana\x00"):
        with pytest.raises(ValueError, match="name"):
            reviewer_name(bad)


def test_mask_edge_follows_the_alpha_outline() -> None:
    shot = np.zeros((300, 200, 3), np.uint8)
    cutout = np.zeros((300, 200, 4), np.uint8)
    cutout[100:200, 50:150, 3] = 255
    edge = np.all(mask_edge(shot, cutout) == (255, 0, 200), axis=-1)
    assert edge[100, 100] and edge[150, 50] and not edge[150, 100] and not edge[20, 20]


def test_review_serve_answers_with_the_configured_token(
    review_env: dict[str, str], queue: ReviewQueue
) -> None:
    import os
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, **review_env, "GARMENTSEG_API_TOKEN": TOKEN}
    command = [sys.executable, "-m", "garmentseg.cli", "review", "serve", "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/login", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "review serve did not start"
                time.sleep(0.2)
        with httpx.Client(base_url=url, follow_redirects=False) as http:
            assert http.post("/login", data={"token": "guess", "name": REVIEWER}).status_code == 401
            signed = http.post("/login", data={"token": TOKEN, "name": REVIEWER})
            assert signed.status_code == 303 and "httponly" in signed.headers["set-cookie"].lower()
            assert queue.items()[0].file in http.get("/").text
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0]
    assert f"review page: http://127.0.0.1:{port}/" in output


def test_without_a_configured_token_serve_makes_one_for_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    from garmentseg.review.web import review_token

    monkeypatch.setenv("REVIEW_TEST_TOKEN", "from-env")
    assert review_token("REVIEW_TEST_TOKEN") == ("from-env", False)
    monkeypatch.delenv("REVIEW_TEST_TOKEN")
    (first, generated), (second, _) = review_token("REVIEW_TEST_TOKEN"), review_token("REVIEW_TEST_TOKEN")
    assert generated and len(first) >= 32 and first != second
    with pytest.raises(ValueError, match="token"):
        create_app(None, "")  # an empty token would let anyone decide


def test_a_cookie_signed_out_of_signs_nobody_in_again(client: httpx.Client, queue: ReviewQueue) -> None:
    """A copy of the cookie (another tab, a shared machine's browser history) is refused after sign-out."""
    _signed_in(client)
    copy = client.cookies.get(SESSION_COOKIE)
    assert client.get("/").status_code == 200
    assert client.post("/logout").status_code == 303
    item = queue.items()[0]
    stolen = {"Cookie": f"{SESSION_COOKIE}={copy}"}
    assert client.get("/", headers=stolen).headers["location"] == "/login"
    assert client.post(f"/items/{item.id}", data={"decision": "accept"}, headers=stolen).status_code == 401
    _signed_in(client)  # signing in again gives a new cookie that works
    assert client.get("/").status_code == 200
