"""The portal in a real browser (headless Chromium via Selenium and chromedriver).

Signup -> owner bootstrap -> org page -> invite a member -> the member signs up and
accepts -> sees actions disabled -> the owner changes the role and rotates keys -> the audit
log shows it all. Screenshots of the main pages go to docs/screenshots/ at 1280 and 390
pixels wide.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import pytest
from rest_framework.test import APIClient

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]
# The committed screenshots are refreshed with LEVQOR_UPDATE_SCREENSHOTS=1 make test; other
# runs still take them (the code path is tested) but into a temporary folder.
SHOTS = (Path(__file__).resolve().parents[2] / "docs" / "screenshots" if os.environ.get("LEVQOR_UPDATE_SCREENSHOTS")
         else Path(tempfile.gettempdir()) / "levqor-screenshots")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture
def browser(tmp_path):
    if not Path(CHROMIUM).exists() or not Path(CHROMEDRIVER).exists():
        pytest.fail("Chromium and chromedriver are required (make test installs Debian's chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _shot(driver, name: str) -> None:
    """Full-page screenshots at a desktop and a phone width (device metrics, not window size,
    so the page is laid out exactly at that width)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for width, mobile in ((1280, False), (390, True)):
        metrics = {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": mobile}
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": min(height, 2400)})
        driver.execute_script("window.scrollTo(0, 0)")
        driver.save_screenshot(str(SHOTS / f"{name}-{width}.png"))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _fill(driver, name: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    field = driver.find_element(By.NAME, name)
    field.clear()
    field.send_keys(value)


def _click(driver, text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.XPATH, f"//button[normalize-space()='{text}']").click()


def _wait_for(driver, text: str, timeout: float = 10) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, timeout).until(lambda d: text in d.page_source, f"page never showed {text!r}")


def _sign_out(driver, base: str) -> None:
    from selenium.webdriver.common.by import By

    driver.get(base + "/accounts/logout/")
    driver.find_element(By.XPATH, "//form//button").click()
    _wait_for(driver, "Sign in")


def test_signup_invite_accept_change_role_rotate_and_audit(live_server, browser, settings):
    from selenium.webdriver.common.by import By

    settings.LEVQOR_SIGNUP_RATE = "1000/hour"
    base = live_server.url
    signup = APIClient().post("/api/tenants", {"name": "Acme Robotics", "slug": "acme-robotics", "plan": "pro",
                                               "admin_email": "ann@acme.test"}, format="json")
    assert signup.status_code == 201
    bootstrap = signup.json()["sso_bootstrap_url"].split("testserver", 1)[1]

    browser.get(base + "/")
    _shot(browser, "landing")
    # The owner sets a password through the signup's bootstrap link and lands in the portal.
    browser.get(base + bootstrap)
    _fill(browser, "password", "correct-horse-battery-9")
    _click(browser, "Create owner account")
    _wait_for(browser, "Acme Robotics is ready")
    browser.get(base + "/org")
    assert "Acme Robotics" in browser.page_source and "plan <strong>pro</strong>" in browser.page_source
    _shot(browser, "org-overview")

    # Invite a member.
    browser.get(base + "/org/settings/members")
    _fill(browser, "email", "bob@acme.test")
    browser.find_element(By.XPATH, "//select[@name='role' and not(@disabled)]/option[.='viewer']").click()
    _click(browser, "Send invitation")
    _wait_for(browser, "Invitation sent")
    link = re.search(r"/org/invite/[^\s<\"]+", browser.page_source).group(0)
    _shot(browser, "members")
    _sign_out(browser, base)

    # Bob signs up with allauth and accepts.
    browser.get(base + "/accounts/signup/")
    _fill(browser, "email", "bob@acme.test")
    _fill(browser, "password1", "another-long-pass-77")
    _fill(browser, "password2", "another-long-pass-77")
    browser.find_element(By.XPATH, "//form//button[@type='submit']").click()
    _wait_for(browser, "bob@acme.test · ")
    browser.get(base + link)
    _click(browser, "Accept invitation")
    _wait_for(browser, "Welcome to Acme Robotics")
    # As a viewer, Bob sees the actions disabled.
    rotate = browser.find_element(By.XPATH, "//button[normalize-space()='Rotate keys']")
    assert rotate.get_attribute("disabled") is not None
    _shot(browser, "org-overview-viewer")
    # ...and a hand-made POST of the action is denied, with the engine's rationale.
    denied = browser.execute_async_script("""
        const done = arguments[arguments.length - 1];
        const token = document.querySelector("input[name=csrfmiddlewaretoken]").value;
        fetch("/org/actions/rotate-keys", {method: "POST", headers: {"X-CSRFToken": token}, credentials: "same-origin"})
          .then(r => r.text()).then(done);""")
    assert "role viewer lacks keys:rotate" in denied
    _sign_out(browser, base)

    # Ann promotes Bob and rotates the keys.
    browser.get(base + "/accounts/login/")
    _fill(browser, "login", "ann@acme.test")
    _fill(browser, "password", "correct-horse-battery-9")
    browser.find_element(By.XPATH, "//form//button[@type='submit']").click()
    _wait_for(browser, "ann@acme.test · ")
    browser.get(base + "/org/settings/members")
    row = browser.find_element(By.XPATH, "//tr[td[contains(., 'bob@acme.test')]]")
    row.find_element(By.XPATH, ".//select/option[.='operator']").click()
    row.find_element(By.XPATH, ".//button[normalize-space()='Change']").click()
    _wait_for(browser, "bob@acme.test is now operator")
    browser.get(base + "/org")
    _click(browser, "Rotate keys")
    _wait_for(browser, "Your new owner key")
    new_key = browser.find_element(By.CSS_SELECTOR, "code.key").text
    assert new_key.startswith("lvq_")

    # The audit log shows what happened.
    browser.get(base + "/org/audit")
    page = browser.page_source
    for event in ("member.invited", "member.role_changed", "keys.rotated", "tenant.created"):
        assert event in page
    _shot(browser, "audit-log")
    browser.get(base + "/docs/multitenancy")
    _shot(browser, "docs-multitenancy")


def test_sso_login_in_the_browser_lands_in_the_tenant(live_server, browser, settings, make_tenant):
    from oidc_provider_mock import run_server_in_thread
    from selenium.webdriver.common.by import By

    from tenants import sso
    from tenants.models import TenantSSO, TenantUser

    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = ["127.0.0.1"]
    tenant, _ = make_tenant(plan="pro", slug="globex")
    with run_server_in_thread() as idp:
        issuer = f"http://127.0.0.1:{idp.server_port}"
        import requests

        requests.put(f"{issuer}/users/erin", json={"email": "erin@globex.test", "email_verified": True,
                                                  "groups": ["ops"]}, timeout=5)
        config = sso.sso_configure(tenant=tenant, issuer=issuer, client_id="levqor-globex", client_secret="cs-123",
                                   default_role="viewer", group_roles={"ops": "operator"}, actor="test")
        assert sso.sso_test(config=config, actor="test")["ok"]
        sso.sso_enable(config=TenantSSO.dangerously_all_tenants.get(pk=config.pk), enabled=True, enforced=True,
                       actor="test")
        browser.get(live_server.url + "/org/sso/globex")
        _shot(browser, "sso-login")
        _click(browser, "Continue with single sign-on")
        _wait_for(browser, "Authorize")
        browser.find_element(By.NAME, "sub").send_keys("erin")
        browser.find_element(By.XPATH, "//button[normalize-space()='Authorize']").click()
        _wait_for(browser, "erin@globex.test · ")
        browser.get(live_server.url + "/org")
        _wait_for(browser, "you are <strong>operator</strong>")
    assert TenantUser.dangerously_all_tenants.get(tenant=tenant, user__email="erin@globex.test").sso_id == "erin"


def _owner_signed_in(browser, base: str, *, slug: str, plan: str) -> str:
    """A tenant signed up through the API whose owner sets a password in the browser; returns its key."""
    signup = APIClient().post("/api/tenants", {"name": slug.replace("-", " ").title(), "slug": slug, "plan": plan,
                                               "admin_email": f"owner@{slug}.test"}, format="json")
    assert signup.status_code == 201
    browser.get(base + signup.json()["sso_bootstrap_url"].split("testserver", 1)[1])
    _fill(browser, "password", "correct-horse-battery-9")
    _click(browser, "Create owner account")
    _wait_for(browser, "is ready")
    return signup.json()["api_key"]


def test_metrics_insights_and_marketplace_pages_in_the_browser(live_server, browser, settings):
    """The owner of a pro organization sees its own traffic charted, opts in to the
    benchmarks, and browses the marketplace (payments not configured: Buy is disabled)."""
    from django.core.management import call_command
    from selenium.webdriver.common.by import By

    from runtime import metrics

    settings.LEVQOR_SIGNUP_RATE = "1000/hour"
    base = live_server.url
    key = _owner_signed_in(browser, base, slug="orbit-labs", plan="pro")
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}", HTTP_X_TENANT_ID="orbit-labs")
    for _ in range(12):
        assert api.get("/api/workflows").status_code == 200
    metrics.flush()

    browser.get(base + "/org/metrics")
    _wait_for(browser, "Metrics")
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg")) >= 2  # the request and latency charts
    api_calls = browser.find_element(By.XPATH, "//div[p[normalize-space()='API calls']]/h2").text
    assert int(api_calls.replace(",", "")) >= 12
    _shot(browser, "org-metrics")

    browser.get(base + "/org/insights")
    browser.find_element(By.NAME, "opted_in").click()
    browser.find_element(By.XPATH, "//select[@name='industry']/option[2]").click()
    _click(browser, "Save")
    _wait_for(browser, "It applies from the next release")
    assert browser.find_element(By.NAME, "opted_in").is_selected()
    own_calls = browser.find_element(By.XPATH, "//tr[td[starts-with(normalize-space(), 'API calls')]]/td[2]").text
    assert float(own_calls.replace(",", "")) >= 12  # this month's calls as of now, not as of the last flush
    _shot(browser, "org-insights")

    call_command("marketplace_seed_demo")
    browser.get(base + "/marketplace")
    _wait_for(browser, "Payments are not configured")
    buttons = browser.find_elements(By.CSS_SELECTOR, "#listings button.buy")
    assert buttons and all(b.get_attribute("disabled") is not None for b in buttons)
    _shot(browser, "marketplace")
