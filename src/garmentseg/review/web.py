"""`garmentseg review serve`: the review page, where a person works through the doubtful cutouts.

A small Starlette app over the review queue (`review/store.py`): the queue sorted by estimate, worst first;
for each item the shot, the cutout over a checkerboard and over the shot, and the mask edge; accept, send
to retouch or reject by button or key. Protected like the Bento by the `serving.auth_token_env` token: a
reviewer signs in once with it and a name and gets an HttpOnly session cookie (SameSite=Strict, signed with
a key derived from the token, so changing the token signs everyone out), and each decision records that
name. SameSite does not tell apart two ports of one host, so every POST from a browser must also come from
the page's own origin. Templates, CSS and JS ship in the package: the page needs no network.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click
import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from garmentseg.cliopts import params_option, profile_option
from garmentseg.review.store import MAX_ITEM_ID, MAX_NAME, reviewer_name

if TYPE_CHECKING:
    from garmentseg.review.store import ReviewItem, ReviewQueue

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
SESSION_COOKIE = "garmentseg_review"
SESSION_SECONDS = 12 * 3600  # one working day
DECISIONS = ("accept", "retouch", "reject")
STATES = ("pending", "retouch", "accepted", "rejected", "closed")
THUMB_HEIGHT = 96  # px: the queue shows many items; a full-resolution cutout each would be megabytes
EDGE_COLOUR = (255, 0, 200)  # magenta: seen on any garment colour and on the studio's grey


@dataclass(frozen=True)
class Sessions:
    """Signed session cookies: `<name, base64>.<expiry>.<nonce>.<HMAC-SHA256>`, each sign-in its own. The
    server keeps only the cookies signed out of, until they expire (a copy of a signed-out cookie must not
    sign anyone in again); a restart forgets them."""

    key: bytes
    signed_out: dict[str, float] = field(default_factory=dict)  # signature -> expiry

    @classmethod
    def for_token(cls, token: str) -> Sessions:
        return cls(hmac.new(token.encode(), b"garmentseg review session", hashlib.sha256).digest())

    def _sign(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self, name: str, now: float | None = None) -> str:
        encoded = base64.urlsafe_b64encode(name.encode()).decode()
        payload = f"{encoded}.{int((now or time.time()) + SESSION_SECONDS)}.{secrets.token_hex(8)}"
        return f"{payload}.{self._sign(payload)}"

    def _checked(self, cookie: str | None, now: float | None) -> tuple[str, int, str] | None:
        """(name, expiry, signature) of a cookie this server signed, unexpired and not signed out of."""
        parts = (cookie or "").split(".")
        if len(parts) != 4 or not all(parts) or not parts[1].isascii() or not parts[1].isdigit():
            return None
        encoded, expiry, nonce, signature = parts
        if not hmac.compare_digest(signature, self._sign(f"{encoded}.{expiry}.{nonce}")):
            return None
        if int(expiry) < (now or time.time()) or signature in self.signed_out:
            return None
        return base64.urlsafe_b64decode(encoded.encode()).decode(), int(expiry), signature

    def reviewer(self, cookie: str | None, now: float | None = None) -> str | None:
        """The reviewer's name for a valid, unexpired cookie; None for anything else."""
        checked = self._checked(cookie, now)
        return checked[0] if checked else None

    def sign_out(self, cookie: str | None, now: float | None = None) -> None:
        """Refuse this cookie from now on (expired ones are dropped from the list as it goes)."""
        checked = self._checked(cookie, now)
        if checked is None:
            return
        moment = now or time.time()
        for old in [s for s, until in self.signed_out.items() if until < moment]:
            del self.signed_out[old]
        self.signed_out[checked[2]] = checked[1]


def parse_item_id(text: str) -> int:
    """The item id a URL names; KeyError for text no item's id can be: only ASCII digits up to the largest
    id the database holds (`int()` reads '٣' as 3, fails on '²', and a larger number overflows the driver)."""
    if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_ITEM_ID)) and int(text) <= MAX_ITEM_ID:
        return int(text)
    raise KeyError(f"no review item {text}")


def _origin(url: str) -> tuple[str, str, int] | None:
    """Scheme, host and port of a URL, the port filled in for http and https so that equal origins compare
    equal; None for one no page is served from (`Origin: null`, a port that is not a number)."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:
        return None
    return (parts.scheme, parts.hostname, port) if parts.scheme and parts.hostname and port else None


def cross_origin(request: Request) -> str | None:
    """Why a state-changing request did not come from this page's own origin, or None when it did (or when it
    says nothing, as curl and scripts do): SameSite=Strict cookies still go along from another port."""
    site = request.headers.get("sec-fetch-site", "")
    if site in {"cross-site", "same-site"}:
        return f"the browser says this request came from a {site} page"
    sender = request.headers.get("origin") or request.headers.get("referer")
    if sender is None:
        return None
    own = f"{request.url.scheme}://{request.url.netloc}"  # the netloc is the Host header's
    sent = _origin(sender)
    if sent is None or sent != _origin(own):
        return f"this request came from {sender}, not from the review page at {own}"
    return None


def mask_edge(shot: Any, cutout: Any) -> Any:
    """The shot with the cutout's mask edge drawn over it, a line ~0.3 % of the short side thick."""
    import cv2
    import numpy as np

    mask = (cutout[..., 3] > 127).astype(np.uint8)
    width = max(1, round(min(mask.shape) * 0.003))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    edge = cv2.morphologyEx(mask, cv2.MORPH_GRADIENT, kernel) > 0
    picture = shot[..., :3].copy()
    if picture.shape[:2] != mask.shape:  # a cutout of another size than its shot: show it, do not crash
        picture = cv2.resize(picture, mask.shape[::-1], interpolation=cv2.INTER_AREA)
    picture[edge] = EDGE_COLOUR
    return picture


def _templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M UTC") if t else ""
    return env


class ReviewPage:
    """The endpoints, over one queue, one token and the page's templates."""

    def __init__(self, queue: ReviewQueue, token: str, *, max_pixels: int):
        self.queue = queue
        self.token = token
        self.sessions = Sessions.for_token(token)
        self.max_pixels = max_pixels
        self.templates = _templates()

    # ---------------------------------------------------------------------------------------- helpers
    def render(self, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(**context)
        return HTMLResponse(html, status_code=status)

    def reviewer(self, request: Request) -> str | None:
        return self.sessions.reviewer(request.cookies.get(SESSION_COOKIE))

    def _item(self, request: Request) -> ReviewItem:
        return self.queue.get(parse_item_id(request.path_params["item_id"]))

    def _last_decision(self, decided: str) -> ReviewItem | None:
        """The item the reviewer just decided (`?decided=<id>` after a decision), shown as a notice; a stale or
        garbled id shows none."""
        try:
            return self.queue.get(parse_item_id(decided))
        except KeyError:
            return None

    def _not_found(self, request: Request, who: str) -> HTMLResponse:
        message = f"no review item {request.path_params['item_id']}"
        return self.render("error.html", 404, reviewer=who, title="Not found", message=message)

    # ---------------------------------------------------------------------------------------- sign in
    async def login_form(self, request: Request) -> Response:  # noqa: ARG002 - Starlette endpoint signature
        return self.render("login.html", reviewer=None, error=None, name="")

    async def login(self, request: Request) -> Response:
        form = await request.form()
        token, raw_name = str(form.get("token", "")), str(form.get("name", ""))
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            log.warning("review page: sign-in refused for %r (wrong token)", raw_name[:MAX_NAME])
            error = "Wrong token: ask the platform team for the review token."
            return self.render("login.html", 401, reviewer=None, error=error, name=raw_name)
        try:
            name = reviewer_name(raw_name)
        except ValueError as exc:
            return self.render("login.html", 400, reviewer=None, error=str(exc), name=raw_name)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            self.sessions.issue(name),
            max_age=SESSION_SECONDS,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        log.info("review page: %s signed in", name)
        return response

    async def logout(self, request: Request) -> Response:
        self.sessions.sign_out(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict")
        return response

    # ----------------------------------------------------------------------------------------- pages
    async def queue_page(self, request: Request) -> Response:
        shown = request.query_params.get("state", "all")
        if shown != "all" and shown not in STATES:
            message = f"state {shown!r} is not one of all, {', '.join(STATES)}"
            return self.render(
                "error.html", 400, reviewer=self.reviewer(request), title="Bad filter", message=message
            )
        items = await run_in_threadpool(self.queue.items, None if shown == "all" else [shown])
        counts = {state: 0 for state in STATES}
        for item in await run_in_threadpool(self.queue.items):
            counts[item.state] += 1
        return self.render(
            "queue.html",
            reviewer=self.reviewer(request),
            items=items,
            shown=shown,
            counts=counts,
            states=STATES,
        )

    async def item_page(self, request: Request) -> Response:
        who = self.reviewer(request)
        try:
            item = await run_in_threadpool(self._item, request)
        except KeyError:
            return self._not_found(request, who)
        order = [i.id for i in await run_in_threadpool(self.queue.items)]
        at = order.index(item.id)
        decided = request.query_params.get("decided", "")
        last = await run_in_threadpool(self._last_decision, decided)
        return self.render(
            "item.html",
            reviewer=who,
            item=item,
            position=at + 1,
            total=len(order),
            previous=order[at - 1] if at > 0 else None,
            following=order[at + 1] if at + 1 < len(order) else None,
            last=last,
            decisions=DECISIONS,
        )

    async def decide(self, request: Request) -> Response:
        who = self.reviewer(request)
        form = await request.form()
        decision = str(form.get("decision", ""))
        if decision not in DECISIONS:
            message = f"decision {decision!r} is not one of {', '.join(DECISIONS)}"
            return self.render("error.html", 400, reviewer=who, title="Bad decision", message=message)
        try:
            item_id = parse_item_id(request.path_params["item_id"])
            item = await run_in_threadpool(self.queue.decide, item_id, decision, who)
        except KeyError:
            return self._not_found(request, who)
        except ValueError as exc:  # e.g. an item already closed by an import
            return self.render("error.html", 409, reviewer=who, title="Not decided", message=str(exc))
        log.info("review page: item %d %s by %s", item.id, item.state, who)
        pending = [i.id for i in await run_in_threadpool(self.queue.items, ["pending"])]
        target = f"/items/{pending[0]}" if pending else "/"
        return RedirectResponse(f"{target}?decided={item.id}", status_code=303)

    # ---------------------------------------------------------------------------------------- images
    async def image(self, request: Request) -> Response:
        try:
            item = await run_in_threadpool(self._item, request)
        except KeyError:
            return Response(f"no review item {request.path_params['item_id']}", 404, media_type="text/plain")
        kind = request.path_params["kind"]
        cached = {"Cache-Control": "private, max-age=3600"}  # an item's files never change
        if kind in {"shot", "cutout"}:
            path = item.shot_path if kind == "shot" else item.cutout_path
            return Response(path.read_bytes(), media_type=_media_type(path), headers=cached)
        if kind in {"edge", "thumb"}:
            png = await run_in_threadpool(self._drawn_png, item, kind)
            return Response(png, media_type="image/png", headers=cached)
        return Response(f"no image {kind!r}: shot, cutout, edge or thumb", 404, media_type="text/plain")

    def _drawn_png(self, item: ReviewItem, kind: str) -> bytes:
        """The mask edge over the shot, or the queue's thumbnail of the cutout (THUMB_HEIGHT px high)."""
        import cv2

        from garmentseg.imageio import encode_png, read_image

        cutout = read_image(item.cutout_path, max_pixels=self.max_pixels, alpha=True)
        if kind == "thumb":
            width = max(1, round(cutout.shape[1] * THUMB_HEIGHT / cutout.shape[0]))
            return encode_png(cv2.resize(cutout, (width, THUMB_HEIGHT), interpolation=cv2.INTER_AREA))
        return encode_png(mask_edge(read_image(item.shot_path, max_pixels=self.max_pixels), cutout))


def _media_type(path: Path) -> str:
    return "image/jpeg" if path.suffix.lower() in {".jpg", ".jpeg"} else "image/png"


class _SameOrigin:
    """Refuses a POST another site's page made a browser send (403): the session cookie would go along."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("method") not in {"GET", "HEAD", "OPTIONS"}:
            reason = cross_origin(Request(scope))
            if reason is not None:
                log.warning("review page: %s %s refused: %s", scope["method"], scope.get("path"), reason)
                message = f"refused: {reason}; open the review page itself and act there"
                await Response(message, 403, media_type="text/plain")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _SignedIn:
    """Lets only signed-in reviewers past: a page asks for the sign-in, anything else is a 401."""

    def __init__(self, app: Any, page: ReviewPage):
        self.app = app
        self.page = page

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/login" or path.startswith("/static/"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        if self.page.reviewer(request) is None:
            is_page = scope.get("method") == "GET" and (path == "/" or path.count("/") == 2)
            response = (
                RedirectResponse("/login", status_code=303)
                if is_page
                else Response(
                    "sign in first: POST /login with the token and a name", 401, media_type="text/plain"
                )
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def create_app(queue: ReviewQueue, token: str, *, max_pixels: int = 40_000_000) -> Any:
    """The review page as an ASGI app: over `queue`, signing in with `token`."""
    if not token:
        raise ValueError("the review page needs a token; an empty one would let anyone decide")
    page = ReviewPage(queue, token, max_pixels=max_pixels)
    routes = [
        Route("/login", page.login_form, methods=["GET"]),
        Route("/login", page.login, methods=["POST"]),
        Route("/logout", page.logout, methods=["POST"]),
        Route("/", page.queue_page, methods=["GET"]),
        Route("/items/{item_id}", page.item_page, methods=["GET"]),
        Route("/items/{item_id}", page.decide, methods=["POST"]),
        Route("/items/{item_id}/{kind}.png", page.image, methods=["GET"]),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes)
    return _SameOrigin(_SignedIn(app, page))


def review_token(env_var: str) -> tuple[str, bool]:
    """The service's token from `$<env_var>`; without one, a fresh token for this run (printed once)."""
    token = os.environ.get(env_var)
    return (token, False) if token else (secrets.token_urlsafe(24), True)


@click.command("serve")
@profile_option
@params_option
@click.option("--host", default=None, help="Interface to listen on (default: serving.host).")
@click.option("--port", default=None, type=int, help="Port (default: serving.review_port).")
def serve_cmd(profile: str | None, params: str | None, host: str | None, port: int | None) -> None:
    """Serve the review page: sign in with the service token and a name, then decide the queue's items."""
    import uvicorn

    from garmentseg.config import load_config
    from garmentseg.review.store import ReviewQueue

    cfg = load_config(profile, params)
    token, generated = review_token(cfg.serving.auth_token_env)
    app = create_app(ReviewQueue.from_config(cfg), token, max_pixels=cfg.serving.max_pixels)
    host, port = host or cfg.serving.host, port or cfg.serving.review_port
    click.echo(f"review page: http://{host}:{port}/")
    if generated:
        click.echo(f"${cfg.serving.auth_token_env} is not set; sign in with this run's token: {token}")
    uvicorn.run(app, host=host, port=port, log_level="warning")
