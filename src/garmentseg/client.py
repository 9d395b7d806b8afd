"""The one client of the cutout service: a shot to `<url>/cutout`, with the bearer token when one is set.

Used by the serving check and the smoke test of the retrain DAG, and by the demo.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from garmentseg.service import HEADER_VERSION

if TYPE_CHECKING:
    import httpx

    from garmentseg.config import Config


@dataclass(frozen=True)
class Reply:
    """What /cutout answered: status, body (the RGBA PNG when 200), headers, and the round trip in ms."""

    status: int
    content: bytes
    headers: dict[str, str]
    latency_ms: float

    @property
    def model_version(self) -> str | None:
        return self.headers.get(HEADER_VERSION.lower())

    def describe(self) -> str:
        """`HTTP <status>: <start of the body>` for error messages."""
        return f"HTTP {self.status}: {self.content[:300].decode('utf-8', 'replace')}"


def auth_headers(cfg: Config) -> dict[str, str]:
    """The bearer token from $<serving.auth_token_env>, as the service expects it (none when unset)."""
    token = os.environ.get(cfg.serving.auth_token_env)
    return {"Authorization": f"Bearer {token}"} if token else {}


def cut_out(
    cfg: Config,
    url: str,
    shot: bytes,
    *,
    filename: str = "shot.png",
    timeout_s: float = 60,
    client: httpx.Client | None = None,
) -> Reply:
    """POST `shot` as the form field `image` to `<url>/cutout`; `client` reuses a connection."""
    import httpx

    request = {
        "files": {"image": (filename, shot)},
        "headers": auth_headers(cfg),
        "timeout": timeout_s,
    }
    start = time.perf_counter()
    with httpx.Client() if client is None else contextlib.nullcontext(client) as session:
        resp = session.post(f"{url.rstrip('/')}/cutout", **request)
    latency_ms = 1000 * (time.perf_counter() - start)
    return Reply(resp.status_code, resp.content, {k.lower(): v for k, v in resp.headers.items()}, latency_ms)


def cutout_problems(reply: Reply, shot: bytes, version: str | None) -> list[str]:
    """What is wrong with a /cutout answer to `shot`: not 200, not an RGBA PNG of the shot's size, or not
    from model `version`. Empty when the answer is right."""
    from garmentseg.imageio import ImageError, decode, read_header

    if reply.status != 200:
        return [reply.describe()]
    expected = read_header(shot)
    try:
        head = read_header(reply.content)
        cutout = decode(reply.content, max_pixels=expected.width * expected.height, alpha=True)
    except ImageError as exc:
        return [f"the cutout is not a readable image of the shot's size: {exc}"]
    problems = []
    if not head.has_alpha or cutout.shape[:2] != (expected.height, expected.width):
        problems.append(
            f"cutout {cutout.shape[1]}x{cutout.shape[0]} alpha={head.has_alpha}; "
            f"expected RGBA {expected.width}x{expected.height}"
        )
    if reply.model_version != str(version):
        problems.append(f"answered by model version {reply.model_version}, expected {version}")
    return problems
