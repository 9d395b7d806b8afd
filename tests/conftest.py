"""Shared fixtures: the project's params, and environment hygiene for every test."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from garmentseg.config import Config, load_config

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
CHROMIUM_INSTALL = "apt-get install chromium chromium-driver"
# Every host name fails to resolve except loopback: a page that needs the internet shows it.
OFFLINE = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, by their `slow(minutes=N)` mark (measured on the full suite): under
    `--dist loadfile --no-loadscope-reorder` (the Makefile's) both workers start on the multi-minute files
    and the short ones fill the end, instead of one worker running the multi-node test alone at the tail.
    The sort is stable, so each file's tests keep their order."""

    def minutes(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return 0.0 if mark is None else float(mark.kwargs.get("minutes", 1))

    items.sort(key=minutes, reverse=True)


@pytest.fixture(autouse=True, scope="module")
def _mlflow_env_is_per_module() -> Iterator[None]:
    """Module-scoped fixtures call the library, whose mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI
    too: each test file starts without one and leaves none to the next file on its worker (a later file's
    `dvc repro` once inherited a stopped server's URL and retried it for minutes)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("MLFLOW_TRACKING_URI", raising=False)
        yield


@pytest.fixture(autouse=True)
def _mlflow_env_is_per_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI, which Config.tracking_uri honours; undo it after
    each test so one test's (possibly dropped) tracking database never leaks into the next."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "unset")  # records the value to restore at teardown
    monkeypatch.delenv("MLFLOW_TRACKING_URI")


@pytest.fixture(scope="session")
def project_root() -> Path:
    return ROOT


@pytest.fixture
def cfg() -> Config:
    """The demo profile of the project's own params.yaml."""
    return load_config("demo", ROOT / "params.yaml")


@pytest.fixture
def chromium() -> Iterator[Any]:
    """A real headless Chromium (Debian's), driven by Selenium through Debian's chromedriver, with no network
    beyond loopback. Skips with the install command on a laptop without it; fails under CI=true."""
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        message = f"headless Chromium is not installed (run: {CHROMIUM_INSTALL})"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", OFFLINE):
        options.add_argument(argument)
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.set_page_load_timeout(60)
    try:
        yield session
    finally:
        session.quit()
