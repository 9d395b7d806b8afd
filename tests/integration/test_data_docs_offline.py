"""The Data Docs site in a real headless Chromium with no network: styled, its index lists every batch, and
each batch's page shows its failing expectations with the failing files."""

from __future__ import annotations

import re

import pytest

from garmentseg.validation import validate_batch
from garmentseg.validation.datadocs import CDN_FILES, localize
from garmentseg.validation.defects import inject_defects, write_clean_batch
from tests.data.test_validation import H, W, small_project

ROWS = "table.ge-index-page-validation-results-table tbody tr.clickable-row"
# Each index row: its text, its link, and its status icon (fa-check-circle passed, fa-times failed).
ROW_SCRIPT = (
    f"return [...document.querySelectorAll('{ROWS}')].map(r => [r.innerText, r.dataset.href, "
    "[...r.querySelectorAll('i.fas')].map(i => [...i.classList].find(c => c.startsWith('fa-'))).join()])"
)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("docs")
    cfg = small_project(tmp / "project")
    batches = {}
    for name, seed, kinds in (
        ("b-docs-clean", 1, []),
        ("b-docs-broken", 2, ["empty_mask", "swapped_cutouts"]),
    ):
        write_clean_batch(tmp / "landing" / name, 2, width=W, height=H, seed=seed)
        defects = inject_defects(tmp / "landing" / name, kinds) if kinds else []
        batches[name] = (validate_batch(tmp / "landing" / name, cfg), defects)
    return {"cfg": cfg, "batches": batches, "index": next(iter(batches.values()))[0].data_docs_index}


def _wait(browser, script: str, timeout: float = 20.0):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(lambda b: b.execute_script(script))


def test_no_page_loads_anything_from_the_network(site):
    docs = site["index"].parent
    for page in docs.rglob("*.html"):
        text = page.read_text()
        assert not re.search(r'<script[^>]+src="https?:', text), page
        assert not re.search(r'<link[^>]+href="https?:', text), page
        assert not re.search(r'<img[^>]+src="https?:', text), page
    for target in filter(None, CDN_FILES.values()):
        assert (docs / "static" / "vendor" / target).is_file(), target


def test_localize_keeps_unknown_assets_and_drops_integrity(tmp_path):
    page = (
        '<script src="https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js" '
        'integrity="sha384-x" crossorigin="anonymous"></script>'
        '<script src="https://cdn.jsdelivr.net/npm/vega@5"></script>'
        '<link rel="stylesheet" href="https://example.org/new.css">'
    )
    out = localize(page, "../static", tmp_path / "p.html")
    assert '<script src="../static/vendor/bootstrap-4.3.1/js/bootstrap.min.js"></script>' in out
    assert "vega" not in out and "integrity" not in out
    assert 'href="https://example.org/new.css"' in out  # logged, left for a newer GX to be vendored


def test_index_lists_every_batch_offline_and_links_its_failing_expectations(site, chromium):
    chromium.get(site["index"].resolve().as_uri())
    _wait(chromium, f"return document.querySelectorAll('{ROWS}').length >= 2")
    rows = chromium.execute_script(ROW_SCRIPT)
    links = {}
    for name, (result, _defects) in site["batches"].items():
        found = [(href, icon) for text, href, icon in rows if name in text]
        assert found, (name, rows)
        links[name], icon = found[0]
        assert icon == ("fa-check-circle" if result.passed else "fa-times"), (name, icon)
    # Bootstrap (navbar is flex), bootstrap-table (the rows above) and Font Awesome's solid face all loaded.
    assert (
        chromium.execute_script("return getComputedStyle(document.querySelector('.navbar')).display")
        == "flex"
    )
    assert chromium.execute_script("return typeof jQuery.fn.bootstrapTable") == "function"
    loaded = _wait(
        chromium,
        "return document.fonts.ready.then(() => [...document.fonts]"
        ".filter(f => f.family.includes('Font Awesome') && f.status === 'loaded').length)",
    )
    assert loaded >= 1  # the pass/fail icons of the index are Font Awesome glyphs

    result, defects = site["batches"]["b-docs-broken"]
    chromium.get(site["index"].parent.joinpath(links["b-docs-broken"]).resolve().as_uri())
    _wait(chromium, "return document.readyState === 'complete'")
    text = chromium.find_element("tag name", "body").text
    unsuccessful = re.search(r"Unsuccessful Expectations\s+(\d+)", text)
    assert unsuccessful and int(unsuccessful[1]) == 2, text[:2000]
    bad_files = {file for d in defects for file in d.expected}
    assert bad_files and all(file in text for file in bad_files)
    failing_checks = {f["check"] for f in result.findings}
    assert failing_checks == {"mask_area", "rgb_match"}
    # Each failing expectation is shown on the column its check reads, with a failed status.
    assert "garment_fraction" in text and "rgb_diff" in text
    assert chromium.execute_script("return getComputedStyle(document.body).fontFamily") != "Times New Roman"


def test_drift_page_beside_the_index_draws_every_statistic_offline(site, chromium):
    page = site["index"].parent / "drift.html"
    chromium.get(page.resolve().as_uri())
    _wait(chromium, "return document.readyState === 'complete'")
    charts = chromium.execute_script(
        "return [...document.querySelectorAll('svg')].map(s => [s.getAttribute('aria-label'), "
        "s.querySelectorAll('circle').length, s.getBoundingClientRect().height])"
    )
    assert {label.split("/")[0] for label, _, _ in charts} == {
        "garment_fraction",
        "brightness",
        "contrast",
        "alpha_partial_share",
    }
    assert all(points >= 1 and height > 100 for _, points, height in charts), charts
    # Every batch has a garment fraction per view (a statistic may lack a batch whose pairs all failed).
    assert all(
        points == len(site["batches"]) for label, points, _ in charts if label.startswith("garment_")
    ), charts
