"""The web console in a real browser: Debian's Chromium driven by Selenium (chromedriver), against
the real server. People sign in with one-time links made by `warrant console invite`; an agent
(the Python client) asks for an approval and waits; an approver decides it in the inbox. Also:
separation of duties, a viewer who may not decide, a form without its CSRF token, a decision's
story and proof (and a tampered ledger's), and an identity named with HTML shown as text.
Screenshots of the main pages are written to target/console-screenshots/."""

import json
import os
import pathlib
import shutil
import subprocess
import threading
import urllib.error
import urllib.parse
import urllib.request

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as seen
from selenium.webdriver.support.ui import WebDriverWait

from warrant_client import Client

from conftest import BINARY, ROOT, running_server

CHROMIUM = os.environ.get("WARRANT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("WARRANT_CHROMEDRIVER", "/usr/bin/chromedriver")
SCREENSHOTS = ROOT / "target" / "console-screenshots"

# scripts/test installs the browser and the provider and sets WARRANT_REQUIRE_BROWSER: there, a
# missing one fails these tests rather than skipping them.
REQUIRED = os.environ.get("WARRANT_REQUIRE_BROWSER") == "1"
BROWSER_MISSING = not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER))
if BROWSER_MISSING and REQUIRED:
    raise RuntimeError(f"{CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium "
                       "chromium-driver)")
pytestmark = pytest.mark.skipif(
    BROWSER_MISSING,
    reason="Debian's chromium and chromium-driver are not installed (scripts/test installs them)",
)


@pytest.fixture(scope="module")
def server():
    with running_server() as addresses:
        yield addresses


@pytest.fixture()
def browser(tmp_path):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--window-size=1280,1000",
                 f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()


def warrant(server, *args):
    """The `warrant` shell against the test's server, as an administrator runs it."""
    done = subprocess.run(
        [BINARY, *args, "--admin", f"http://{server['admin']}", "--data-dir", server["data"]],
        capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr + done.stdout
    return json.loads(done.stdout)


def sign_in(browser, server, human):
    """Signs `human` in through a one-time link, as they would: open it, press the button."""
    browser.delete_all_cookies()
    link = warrant(server, "console", "invite", human)["url"]
    assert link.startswith(server["console"] + "/invite/")
    browser.get(link)
    browser.find_element(By.ID, "sign-in").click()
    WebDriverWait(browser, 10).until(seen.url_contains("/console/approvals"))
    assert browser.find_element(By.ID, "signed-in-as").text == human.replace("::", '::"') + '"'


def screenshot(browser, name):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    browser.save_screenshot(str(SCREENSHOTS / f"{name}.png"))


def submit(browser, button):
    """Presses a form's button and waits for the page it leads to."""
    button.click()
    WebDriverWait(browser, 10).until(seen.staleness_of(button))


def text_of(browser):
    return browser.find_element(By.TAG_NAME, "main").text


def agent_asks(server, justification, on_behalf_of=None):
    """deploy-bot is denied an update of the payments config and asks for the approval the
    denial names; returns the client (still open), the denial and the filed request."""
    client = Client(server["check"], timeout=5)
    denied = client.check("ServiceAccount::deploy-bot", "update", "Config::payments-api")
    assert not denied and denied.approval_required is not None
    filed = client.request_approval(denied, justification=justification, duration_seconds=600,
                                    ticket=None, on_behalf_of=on_behalf_of)
    assert filed.state == "pending"
    return client, denied, filed


def post_form(server, browser, path, fields):
    """POSTs `fields` with the browser's session cookie (what a forged or stripped form sends);
    returns the status and the page."""
    cookie = "; ".join(f"{c['name']}={c['value']}" for c in browser.get_cookies())
    request = urllib.request.Request(
        server["console"].removesuffix("/console") + path,
        data=urllib.parse.urlencode(fields).encode(), method="POST",
        headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


def test_an_approver_approves_in_the_inbox_and_the_waiting_agent_is_allowed(server, browser):
    sign_in(browser, server, "Human::bob")
    # The inbox is open before the request exists: it must appear without a reload.
    browser.get(server["console"] + "/approvals")
    marker = browser.execute_script("window.__not_reloaded = true; return true;")
    assert marker
    client, denied, filed = agent_asks(server, "roll out the fix <b>now</b>")
    card = WebDriverWait(browser, 15).until(
        seen.presence_of_element_located((By.ID, f"request-{filed.id}")))
    assert browser.execute_script("return window.__not_reloaded === true;"), "the page reloaded"
    # What the agent wrote is shown as text, never as markup.
    assert "roll out the fix <b>now</b>" in card.find_element(By.CLASS_NAME, "justification").text
    assert card.find_elements(By.TAG_NAME, "b") == []
    assert "Approving allows" in card.text
    assert browser.find_element(By.ID, "pending-by-age").get_attribute("role") == "img"
    screenshot(browser, "inbox")

    waited = {}
    waiter = threading.Thread(
        target=lambda: waited.update(decided=client.wait_for_approval(filed, timeout=30)))
    waiter.start()
    card.find_element(By.NAME, "note").send_keys("the fix is reviewed")
    submit(browser, card.find_element(By.CSS_SELECTOR, "button.approve"))
    notice = WebDriverWait(browser, 10).until(
        seen.presence_of_element_located((By.ID, "done")))
    assert "approved" in notice.text
    waiter.join(timeout=30)
    decided = waited["decided"]
    assert decided.approved and decided.decided_by == "Human::bob"
    allowed = client.check("ServiceAccount::deploy-bot", "update", "Config::payments-api",
                           approval=decided.approval_id)
    assert allowed, allowed.describe()

    # The log's pictures count what was decided: the denial is among the last hour's, and its
    # reason among the denials.
    browser.get(server["console"] + "/decisions")
    over_time = browser.find_element(By.ID, "decisions-over-time")
    denies = int(over_time.get_attribute("aria-label").split(" and ")[1].split()[0])
    assert denies >= 1
    assert "production-change-needs-approval" in \
        browser.find_element(By.ID, "denials-by-reason").text
    screenshot(browser, "decisions")

    # The denial's page tells the story, the provenance and the proof.
    browser.get(f"{server['console']}/decisions/{denied.decision_id}")
    story = browser.find_element(By.ID, "story").text
    assert filed.id in story and "approved by Human::\"bob\"" in story
    assert "the fix is reviewed" in story
    # ... and the approval's use, the allowed update.
    assert allowed.decision_id[-8:] in story
    assert "ServiceAccount::\"deploy-bot\"" in browser.find_element(By.ID, "provenance").text
    # Durable mode signs each batch as it is written: the record is signed already.
    verdict = browser.find_element(By.ID, "verdict")
    assert "Signature verifies" in verdict.text, verdict.text
    assert verdict.get_attribute("class") == "verified"
    key = subprocess.run([BINARY, "log", "--data-dir", server["data"], "public-key"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert key in browser.find_element(By.ID, "proof").text
    screenshot(browser, "decision")
    client.close()


def test_separation_of_duties_a_viewer_and_a_form_without_its_token_are_refused(server, browser):
    client, _, filed = agent_asks(server, "on bob's behalf", on_behalf_of="Human::bob")
    sign_in(browser, server, "Human::bob")
    browser.get(server["console"] + "/approvals")
    card = browser.find_element(By.ID, f"request-{filed.id}")

    # The reject form, sent as the browser would but without its CSRF token, is refused and
    # changes nothing.
    status, page = post_form(server, browser, f"/console/approvals/{filed.id}",
                             {"verdict": "reject", "reason": "no"})
    assert status == 400 and "CSRF token" in page
    assert client.wait_for_approval(filed, timeout=1).state == "pending"

    # Bob asked (the agent acts for him): he cannot approve it himself.
    submit(browser, card.find_element(By.CSS_SELECTOR, "button.approve"))
    assert "separation of duties" in text_of(browser)
    assert client.wait_for_approval(filed, timeout=1).state == "pending"

    # An auditor sees no form to decide it, and a forged one is refused by the policies.
    sign_in(browser, server, "Human::erin")
    browser.get(server["console"] + "/approvals")
    assert browser.find_elements(By.ID, f"request-{filed.id}") == []
    assert "do not let you decide" in text_of(browser)
    csrf = browser.find_element(By.CSS_SELECTOR, "form.sign-out input[name=csrf]")
    status, page = post_form(server, browser, f"/console/approvals/{filed.id}",
                             {"csrf": csrf.get_attribute("value"), "verdict": "approve"})
    assert status == 403 and "decide_approval_request" in page
    assert client.wait_for_approval(filed, timeout=1).state == "pending"
    client.close()


def test_an_identity_named_with_html_is_shown_as_text(server, browser):
    for name in ("<script>alert(1)</script>", '"><img src=x onerror=alert(2)>'):
        warrant(server, "identity", "create", f"Agent::{name}", "--owner", "Human::carol",
                "--attributes", json.dumps({"environment": "<i>prod</i>", "scopes": []}))
    sign_in(browser, server, "Human::alice")
    browser.get(server["console"] + "/identities?type_name=Agent")
    listed = browser.find_element(By.ID, "identities").text
    assert "<script>alert(1)</script>" in listed
    assert '"><img src=x onerror=alert(2)>' in listed
    assert browser.find_elements(By.CSS_SELECTOR, "main img, main script") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    browser.find_element(By.PARTIAL_LINK_TEXT, "<script>").click()
    assert "<script>alert(1)</script>" in browser.find_element(By.ID, "identity-name").text
    assert "<i>prod</i>" in browser.find_element(By.ID, "identity").text
    assert browser.find_elements(By.CSS_SELECTOR, "main i, main script") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert.text
    screenshot(browser, "identity")


def test_an_owner_suspends_their_agent_and_nobody_else_can(server, browser):
    sign_in(browser, server, "Human::carol")
    browser.get(server["console"] + "/identities/Agent/procurement-agent")
    assert browser.find_element(By.ID, "status").text == "active"
    assert "no configured issuer" in browser.find_element(By.ID, "credentials").text
    browser.find_element(By.ID, "set-status").click()
    # While the form's answer replaces the page, an element read a moment before is gone:
    # Chromium says so as a stale element or, since 156, as a node not in the document.
    reloaded = WebDriverWait(browser, 10, ignored_exceptions=(WebDriverException,))
    reloaded.until(lambda b: b.find_element(By.ID, "status").text == "suspended")
    with Client(server["check"], timeout=5) as client:
        stopped = client.check("Agent::procurement-agent", "submit_vendor_request",
                               "Tool::vendor-portal", context={"vendor": "acme", "amount": 1})
        assert not stopped and "identity-not-active" in stopped.reasons
    browser.find_element(By.ID, "set-status").click()
    reloaded.until(lambda b: b.find_element(By.ID, "status").text == "active")
    # Carol owns no deploy-bot: the policies refuse her, and the refusal is on record.
    browser.get(server["console"] + "/identities/ServiceAccount/deploy-bot")
    assert "Not allowed" in browser.title and "console.cedar" in text_of(browser)


def test_a_tampered_ledger_shows_a_record_that_does_not_verify(browser, tmp_path):
    data = str(tmp_path / "data")
    with running_server("--ledger-checkpoint-records", "3", data=data) as first:
        with Client(first["check"], timeout=5) as client:
            decisions = [client.check("ApiKey::pipeline-etl", "read", "Dataset::sales-2026",
                                      context={"justification": f"run {i}"}) for i in range(6)]
    segment = sorted(pathlib.Path(data, "ledger").glob("segment-*.jsonl"))[-1]
    lines = segment.read_text().splitlines()
    edited = [i for i, line in enumerate(lines) if '"run 2"' in line]
    assert len(edited) == 1
    lines[edited[0]] = lines[edited[0]].replace('"run 2"', '"run 9"')
    segment.write_text("\n".join(lines) + "\n")
    with running_server(data=data) as again:
        sign_in(browser, again, "Human::alice")
        browser.get(f"{again['console']}/decisions/{decisions[2].decision_id}")
        verdict = browser.find_element(By.ID, "verdict")
        assert verdict.text.startswith("Does not verify"), verdict.text
        assert verdict.get_attribute("class") == "unverified"
        browser.get(f"{again['console']}/decisions/{decisions[3].decision_id}")
        assert "Signature verifies" in browser.find_element(By.ID, "verdict").text
        screenshot(browser, "tampered")
    shutil.rmtree(data, ignore_errors=True)


OIDC_PROVIDER = ROOT / "tests" / "oidc" / "provider.mjs"


def free_port():
    import socket
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture()
def with_identity_provider(tmp_path):
    """A running oidc-provider (npm) and a Warrant whose console signs people in with it."""
    if not (OIDC_PROVIDER.parent / "node_modules" / "oidc-provider").exists():
        assert not REQUIRED, "tests/oidc has no node_modules: run `npm ci` there"
        pytest.skip("tests/oidc has no node_modules: run `npm ci` there (scripts/test does)")
    port = free_port()
    secret = tmp_path / "client-secret"
    secret.write_text("test-client-secret\n")
    config = tmp_path / "warrant.toml"
    config.write_text(
        "[console.oidc]\n"
        f'issuer = "http://127.0.0.1:{port}"\n'
        'client_id = "warrant-console"\n'
        f'client_secret_file = "{secret}"\n'
        'name = "the test provider"\n')
    with running_server("--config", str(config)) as server:
        provider = subprocess.Popen(
            ["node", str(OIDC_PROVIDER), str(port), server["console"] + "/oidc/callback",
             "test-client-secret"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert provider.stdout.readline().startswith("oidc-provider on "), "no provider"
            yield server
        finally:
            provider.kill()
            provider.wait()


def through_the_provider(browser, server, login):
    """Signs in on the console's page through the provider's own login and consent pages."""
    browser.delete_all_cookies()
    browser.get(server["console"] + "/sign-in")
    browser.find_element(By.ID, "oidc-sign-in").click()
    WebDriverWait(browser, 10).until(seen.presence_of_element_located((By.NAME, "login")))
    browser.find_element(By.NAME, "login").send_keys(login)
    browser.find_element(By.NAME, "password").send_keys("any password")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The provider asks to share the account with Warrant's console.
    WebDriverWait(browser, 10).until(lambda b: "/console/" in b.current_url or
                                     b.find_elements(By.CSS_SELECTOR, "button[type=submit]"))
    if "/console/" not in browser.current_url:
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(browser, 15).until(seen.url_contains("/console/"))


def test_people_sign_in_through_the_identity_provider_as_their_human(with_identity_provider,
                                                                      browser):
    server = with_identity_provider
    through_the_provider(browser, server, "carol")
    WebDriverWait(browser, 10).until(seen.url_contains("/console/approvals"))
    assert browser.find_element(By.ID, "signed-in-as").text == 'Human::"carol"'
    cookies = {c["name"]: c for c in browser.get_cookies()}
    session = cookies["warrant_console"]
    assert session["httpOnly"] and session["secure"] and session["sameSite"] == "Strict"
    # Carol owns the procurement agent: its page is hers to see.
    browser.get(server["console"] + "/identities/Agent/procurement-agent")
    assert "Agent::\"procurement-agent\"" in browser.find_element(By.ID, "identity-name").text
    # Signing out ends the session: its cookie no longer opens a page.
    status, _, _ = get_page(server, "/console/approvals", f"warrant_console={session['value']}")
    assert status == 200
    browser.find_element(By.CSS_SELECTOR, "form.sign-out button").click()
    WebDriverWait(browser, 10).until(seen.url_contains("/console/sign-in"))
    status, headers, _ = get_page(server, "/console/approvals",
                                  f"warrant_console={session['value']}")
    assert status == 303 and headers["location"] == "/console/sign-in"

    # Someone the provider knows but the facts do not is not signed in.
    through_the_provider(browser, server, "mallory")
    assert "no Human has email \"mallory@example.com\"" in text_of(browser)
    browser.get(server["console"] + "/approvals")
    assert "/console/sign-in" in browser.current_url


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def get_page(server, path, cookie=None):
    """GETs `path` of the console with `cookie`, following no redirect: status, headers, body."""
    base = server["console"].removesuffix("/console")
    request = urllib.request.Request(base + path, headers={"Cookie": cookie} if cookie else {})
    try:
        with urllib.request.build_opener(NoRedirect).open(request, timeout=10) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, \
                answer.read().decode()
    except urllib.error.HTTPError as answer:
        return answer.code, {k.lower(): v for k, v in answer.headers.items()}, \
            answer.read().decode()


def test_the_console_answers_with_its_security_headers_and_refuses_strangers(server):
    def get(path, cookie=None):
        return get_page(server, path, cookie)

    status, headers, _ = get("/console/sign-in")
    assert status == 200
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "'unsafe-inline'" not in policy
    assert headers["x-frame-options"] == "DENY" and headers["cache-control"] == "no-store"
    # No session, or a made-up one: sent to sign in.
    for cookie in (None, "warrant_console=" + "0" * 64):
        status, headers, _ = get("/console/decisions", cookie)
        assert status == 303 and headers["location"] == "/console/sign-in"
    # A used or unknown sign-in link says so.
    status, _, page = get("/console/invite/" + "1" * 64)
    assert status == 404 and "was used already" in page
    # The admin token is no sign-in.
    status, headers, _ = get("/console/approvals", "warrant_console=" + server["token"])
    assert status == 303



def test_the_playground_explains_a_check_without_deciding_it(server, browser):
    def recorded():
        done = subprocess.run([BINARY, "log", "--data-dir", server["data"], "search",
                               "--principal", "ApiKey::pipeline-etl", "--output", "json"],
                              capture_output=True, text=True, check=True)
        return len(json.loads(done.stdout))

    before = recorded()
    sign_in(browser, server, "Human::erin")
    browser.get(server["console"] + "/policies")
    assert "console-auditors" in browser.find_element(By.ID, "policies").text
    form = browser.find_element(By.ID, "playground")
    form.find_element(By.NAME, "principal").send_keys("ApiKey::pipeline-etl")
    form.find_element(By.NAME, "action").send_keys("read")
    form.find_element(By.NAME, "resource").send_keys("Dataset::salaries")
    submit(browser, form.find_element(By.CSS_SELECTOR, "button[type=submit]"))
    errors = browser.find_elements(By.ID, "playground-error")
    assert not errors, errors[0].text
    answer = browser.find_element(By.ID, "playground-answer").text
    assert "DENY" in answer and "dataset-outside-identity-scopes" in answer
    assert "satisfied" in answer
    screenshot(browser, "policies")
    assert recorded() == before, "the playground recorded a decision"
    # An approver may not look at the policies.
    sign_in(browser, server, "Human::bob")
    browser.get(server["console"] + "/policies")
    assert "Not allowed" in browser.title and "view_policies" in text_of(browser)
