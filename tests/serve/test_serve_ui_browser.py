"""`gmai demo-ui` in headless Chromium (Debian's chromium, driven by Playwright): upload a DICOM,
see the normalised image and the de-identified header, ask, get an answer; save a screenshot.

Set GMAI_SAVE_SCREENSHOTS=1 to also copy the screenshot to docs/screenshots/demo-ui.png.
The model is a tiny random-weight checkpoint (synthetic): its answer is gibberish; the test
checks that an answer arrives, not what it says.
"""

import os
import shutil
from pathlib import Path

import pytest

from gmai.serve.process import ServerProcess

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def test_upload_ask_answer_in_headless_chromium(tiny_checkpoint, chromium_path, tmp_path):
    from playwright.sync_api import sync_playwright
    from pydicom.data import get_testdata_file

    dicom = tmp_path / "ct_small.dcm"
    shutil.copy(get_testdata_file("CT_small.dcm"), dicom)
    with ServerProcess(tiny_checkpoint, command="demo-ui", ready_path="/", startup_timeout=240,
                       log_path=tmp_path / "demo-ui.log", args=["--max-new-tokens", "12", "--torch-threads", "1"]
                       ) as demo, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(demo.url, wait_until="domcontentloaded", timeout=120_000)
            page.locator("#upload input[type=file]").set_input_files(str(dicom))
            page.wait_for_selector("#preview img", timeout=120_000)  # the normalised image is shown
            page.wait_for_function("document.querySelector('#header').innerText.includes('CT')", timeout=60_000)
            header_text = page.locator("#header").inner_text()
            # only numbers and coded words are shown: no free text (Manufacturer) and no name (#12)
            assert "ORIGINAL" in header_text and "GE MEDICAL" not in header_text
            assert "CompressedSamples" not in header_text
            page.locator("#question textarea").fill("What modality is this?")
            page.locator("#ask").click()
            answer = page.locator("#chat .bot, #chat [data-testid=bot]").first
            answer.wait_for(timeout=120_000)
            assert "What modality is this?" in page.locator("#chat").inner_text()
            assert answer.inner_text().strip(), "the model's answer should appear in the chat"
            shot = tmp_path / "demo-ui.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("GMAI_SAVE_SCREENSHOTS"):
        target = ROOT / "docs" / "screenshots" / "demo-ui.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target)
