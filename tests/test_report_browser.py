"""The HTML report in a real headless Chromium: the matrix and a divergence are visible, the filters hide
and show rows, the copy button answers, and a screenshot is saved (docs/report.png is the README's).

Chromium and chromedriver come from Debian's `chromium` and `chromium-driver` (scripts/setup.sh installs
them where apt-get can); the test skips, saying why, only where neither can be found.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "quick-torch-onnx.jsonl"
SCREENSHOT = ROOT / "docs" / "report.png"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--window-size=1366,860",
]


def _browser_paths() -> tuple[str, str]:
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip(
            "no headless Chromium here: install Debian's chromium and chromium-driver (scripts/setup.sh "
            "does, where apt-get is available)"
        )
    return chromium, driver


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the [test] extra")
    from selenium.webdriver.chrome.service import Service

    from normconf.reports import hazards as H
    from normconf.reports import html

    chromium, driver_path = _browser_paths()
    tmp = tmp_path_factory.mktemp("report")
    found = H.Hazards(
        {},
        [
            H.Hazard(
                "batch_norm",
                "torch.functional",
                "onnx.reference",
                4.8e-7,
                0.026,
                ["running_var: 'unbiased' vs 'biased'"],
            )
        ],
        {},
        H.reference_running_var(),
    )
    report = html.write([FIXTURE], tmp / "index.html", found)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in FLAGS + [f"--user-data-dir={tmp / 'profile'}"]:
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        browser.get(report.as_uri())
        yield browser, tmp
    finally:
        browser.quit()


def _visible(browser, selector) -> list:
    from selenium.webdriver.common.by import By

    return [e for e in browser.find_elements(By.CSS_SELECTOR, selector) if e.is_displayed()]


def test_matrix_and_a_divergence_are_visible(page):
    browser, tmp = page
    from selenium.webdriver.common.by import By

    assert {row.get_attribute("data-impl") for row in _visible(browser, "#matrix tbody tr")} == {
        "torch.functional",
        "onnx.reference",
    }
    assert _visible(browser, "#matrix button.cell.v-expected-divergence")
    item = _visible(browser, "details.item[data-verdict='expected divergence']")[0]
    item.find_element(By.TAG_NAME, "summary").click()
    repro = item.find_element(By.CSS_SELECTOR, "pre[id^=repro-]")
    assert repro.is_displayed() and "from normconf" in repro.text
    item.find_element(By.CSS_SELECTOR, "button.copy").click()
    status = item.find_element(By.CSS_SELECTOR, ".copy-status")
    from selenium.webdriver.support.ui import WebDriverWait

    # the button answers either way, once the clipboard's promise settles
    WebDriverWait(browser, 5).until(lambda _: status.text.startswith(("Copied", "Copy failed")))
    browser.save_screenshot(str(tmp / "divergence.png"))
    assert (tmp / "divergence.png").stat().st_size


def test_filters_hide_and_show_rows(page):
    browser, tmp = page
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    items = len(browser.find_elements(By.CSS_SELECTOR, "details.item"))
    assert len(_visible(browser, "details.item")) == items
    Select(browser.find_element(By.ID, "filter-impl")).select_by_value("onnx.reference")
    assert [r.get_attribute("data-impl") for r in _visible(browser, "#matrix tbody tr")] == ["onnx.reference"]
    shown = _visible(browser, "details.item")
    assert 0 < len(shown) < items and {e.get_attribute("data-impl") for e in shown} == {"onnx.reference"}
    assert f"{len(shown)} of {items}" in browser.find_element(By.ID, "filter-status").text

    Select(browser.find_element(By.ID, "filter-norm")).select_by_value("batch_norm")
    assert {e.get_attribute("data-norm") for e in _visible(browser, "details.item")} == {"batch_norm"}
    assert [h.get_attribute("data-norm") for h in _visible(browser, "#matrix thead th[data-norm]")] == [
        "batch_norm"
    ]

    browser.find_element(By.ID, "filter-problems").click()  # the fixture has no findings: nothing left
    assert not _visible(browser, "details.item") and not _visible(browser, "div.group")

    reset = browser.find_element(By.ID, "filter-reset")
    reset.send_keys(" ")  # keyboard: a real button takes Space
    assert len(_visible(browser, "details.item")) == items
    assert len(_visible(browser, "#matrix tbody tr")) == 2


def test_a_matrix_cell_filters_to_its_findings(page):
    browser, tmp = page
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    cell = _visible(browser, "#matrix button.cell[data-impl='torch.functional'][data-norm='group_norm']")[0]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
    cell.send_keys(Keys.ENTER)  # keyboard: the cell is a real button
    shown = _visible(browser, "details.item")
    assert shown and {(e.get_attribute("data-impl"), e.get_attribute("data-norm")) for e in shown} == {
        ("torch.functional", "group_norm")
    }
    browser.find_element(By.ID, "filter-reset").click()


def test_screenshot_of_the_summary(page):
    browser, tmp = page
    browser.execute_script("window.scrollTo(0, 0)")
    path = tmp / "report.png"
    assert browser.save_screenshot(str(path)) and path.stat().st_size
    if os.environ.get("NORMCONF_UPDATE_SCREENSHOT"):  # the README's picture, renewed on request only
        shutil.copyfile(path, SCREENSHOT)


def test_the_matrix_tells_divergence_kinds_apart_and_fits_1440_pixels(page, tmp_path):
    """Every adapter and norm, each cell a finding beside a semantic, a precision (with its dtypes) and a
    special-value divergence - the widest cell there is: the matrix shows the kinds apart and needs
    no horizontal scrolling in a 1440-px-wide window."""
    import json

    from normconf import adapters
    from normconf.reference import NORMS
    from normconf.reports import html

    browser, _ = page
    lines = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    session, end = lines[0], lines[-1]
    template = next(r for r in lines if r.get("verdict") == "expected divergence")
    records = [session]
    for name in adapters.built_in():
        for norm in NORMS:
            for dtype, severity in (
                ("float16", "precision"),
                ("bfloat16", "precision"),
                ("float32", "semantic"),
                ("float64", "special"),
            ):
                records.append(
                    {**template, "adapter": name, "norm": norm, "dtype": dtype, "severity": severity}
                )
            records.append(
                {
                    **template,
                    "adapter": name,
                    "norm": norm,
                    "dtype": "float64",
                    "property": "x",
                    "verdict": "finding",
                }
            )
    records.append(end)
    wide = tmp_path / "wide.jsonl"
    wide.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    report = html.write([wide], tmp_path / "wide.html", None)
    browser.set_window_size(1440, 900)
    try:
        browser.get(report.as_uri())
        cell = _visible(browser, "#matrix button.cell")[0]
        assert [k.text for k in cell.find_elements("css selector", ".kind")] == ["S", "P", "V"]
        assert "precision divergence: float16, bfloat16" in cell.get_attribute("aria-label").replace(
            "precision divergence (float16, bfloat16)", "precision divergence: float16, bfloat16"
        )
        overflow = browser.execute_script(
            "const s = document.querySelector('#matrix').closest('.scroll');"
            "return [s.scrollWidth, s.clientWidth, document.documentElement.scrollWidth, window.innerWidth];"
        )
        assert overflow[0] <= overflow[1] and overflow[2] <= overflow[3], overflow
    finally:
        browser.set_window_size(1366, 860)


@pytest.mark.clause("NUM.L5")
def test_the_matrix_colours_each_cell_by_its_strongest_level(page, tmp_path):
    """One look tells which pairs differ in exact arithmetic: a cell is coloured by the strongest level
    at which any of its results diverges (semantics darkest, special values lightest), a finding in its
    own colour, a cell where every level holds green; the legend names each colour."""
    import json

    from normconf.reports import html

    browser, _ = page
    lines = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
    session, end = lines[0], lines[-1]
    template = next(r for r in lines if r.get("verdict") == "expected divergence")
    passing = next(r for r in lines if r.get("verdict") == "pass")
    records = [session]
    cells = {
        "batch_norm": ("expected divergence", ["semantics", "range"]),
        "layer_norm": ("expected divergence", ["accuracy", "special values"]),
        "rms_norm": ("expected divergence", ["range"]),
        "group_norm": ("expected divergence", ["special values"]),
        "instance_norm": ("finding", ["range"]),
        "lp_normalize": ("pass", []),
    }
    for norm, (verdict, found) in cells.items():
        base = passing if verdict == "pass" else template
        records.append({**base, "adapter": "torch.nn", "norm": norm, "verdict": verdict, "levels": found})
        records.append({**passing, "adapter": "torch.nn", "norm": norm})
    records.append(end)
    path = tmp_path / "levels.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    report = html.write([path], tmp_path / "levels.html", None)
    browser.get(report.as_uri())
    colour = {
        norm: browser.execute_script(
            "return getComputedStyle(arguments[0]).backgroundColor",
            _visible(browser, f"#matrix button.cell[data-norm='{norm}']")[0],
        )
        for norm in cells
    }
    assert colour["batch_norm"] == "rgb(122, 63, 0)"  # semantics, the strongest of its two
    assert colour["layer_norm"] == "rgb(163, 95, 0)"  # accuracy
    assert colour["rms_norm"] == "rgb(242, 196, 109)"  # range
    assert colour["group_norm"] == "rgb(251, 232, 196)"  # special values
    assert colour["instance_norm"] == "rgb(198, 40, 40)"  # a finding, whatever its level
    assert colour["lp_normalize"] == "rgb(26, 127, 55)"  # every level holds
    words = _visible(browser, "#matrix button.cell[data-norm='rms_norm']")[0].get_attribute("aria-label")
    assert "strongest level: range" in words
    legend = browser.find_element("css selector", "#summary p.muted").text
    assert all(word in legend for word in ("semantics", "accuracy", "range", "special values"))
