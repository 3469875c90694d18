"""Access reviews as people see them, in Debian's Chromium: the self-contained HTML report that
`warrant review --out` writes (opened from disk: its pictures are inline SVG, and it loads
nothing else), and the console's Review page, where an owner attests what they own and a
security engineer sees every finding. Screenshots go to target/console-screenshots/."""

import json
import pathlib
import subprocess

from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from warrant_client import Client

from conftest import BINARY
from test_console import browser, pytestmark, screenshot, server, sign_in, submit  # noqa: F401


def review(server, out):
    done = subprocess.run(
        [BINARY, "review", "--out", str(out), "--admin", f"http://{server['admin']}",
         "--data-dir", server["data"]], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_the_report_is_one_file_with_its_pictures_and_every_finding(server, browser, tmp_path):
    # Some decisions, allowed and denied, for the pictures.
    client = Client(server["check"], timeout=5)
    for i in range(40):
        client.check("ApiKey::pipeline-etl", "read", "Dataset::sales-2026" if i % 3 else
                     "Dataset::salaries")
        if i % 4 == 0:
            client.check("ServiceAccount::deploy-bot", "update", "Config::payments-api")
    client.close()
    written = review(server, tmp_path)
    assert written["counts"]["not-attested"] >= 1
    # The bundled facts hold an identity nobody owns.
    assert written["counts"]["ownerless"] >= 1
    browser.get(pathlib.Path(written["report"]).as_uri())
    assert browser.title.startswith("Access review")
    # Nothing was fetched: styles and pictures are in the file.
    assert browser.execute_script("return performance.getEntriesByType('resource').length") == 0
    for picture in ("approvals-by-age", "denials-by-reason", "days-ApiKey"):
        assert browser.find_element(By.ID, picture).get_attribute("tagName").lower() == "svg"
    ownerless = browser.find_element(By.ID, "ownerless")
    assert "ServiceAccount::legacy-cron" in ownerless.text
    assert "warrant identity update ServiceAccount::legacy-cron --owner" in ownerless.text
    counts = browser.find_element(By.ID, "summary").text
    assert f"{written['findings']} findings" in counts
    rows = (tmp_path / "findings.csv").read_text().splitlines()
    assert len(rows) == written["findings"] + 1
    browser.set_window_size(1280, 1900)
    screenshot(browser, "review-report")


def test_an_owner_attests_in_the_console_and_the_finding_goes(server, browser):
    sign_in(browser, server, "Human::carol")
    browser.get(server["console"] + "/review")
    waiting = browser.find_element(By.ID, "attest")
    assert "Agent::procurement-agent" in waiting.text
    # Carol is in no team: she sees her own, not everyone's findings.
    assert browser.find_elements(By.ID, "summary") == []
    row = next(r for r in waiting.find_elements(By.TAG_NAME, "tr")
               if "Agent::procurement-agent" in r.text)
    submit(browser, row.find_element(By.CSS_SELECTOR, "button[value=confirm]"))
    WebDriverWait(browser, 10).until(seen.url_contains("/console/review"))
    assert "Agent::procurement-agent" not in browser.find_element(By.ID, "attest").text

    # The security team sees every finding, with the pictures.
    sign_in(browser, server, "Human::alice")
    browser.get(server["console"] + "/review")
    assert "findings" in browser.find_element(By.ID, "summary").text
    assert "ServiceAccount::legacy-cron" in browser.find_element(By.ID, "ownerless").text
    assert "Agent::procurement-agent" not in browser.find_element(By.ID, "not-attested").text
    screenshot(browser, "console-review")
