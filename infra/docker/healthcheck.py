"""Container health check without curl: exit 0 when the URL answers 2xx, else 1.

Usage: python healthcheck.py [URL]; with no URL it probes the Bento service's /readyz on $BENTO_PORT.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

TIMEOUT_S = 5.0


def default_url() -> str:
    """The image's default command is the Bento service; its readiness endpoint is the default probe."""
    return f"http://127.0.0.1:{os.environ.get('BENTO_PORT', '3000')}/readyz"


def probe(url: str, timeout: float = TIMEOUT_S) -> tuple[bool, str]:
    """(healthy, reason) for one GET of url."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300, f"{url}: HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        return False, f"{url}: HTTP {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url}: {exc}"


def main(argv: list[str]) -> int:
    healthy, reason = probe(argv[1] if len(argv) > 1 else default_url())
    if not healthy:
        sys.stderr.write(reason + "\n")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
