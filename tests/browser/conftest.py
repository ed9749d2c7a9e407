"""Real Chromium driven by selenium for the browser tests, and the page steps they share.

Chromium and its WebDriver are Debian's ``chromium`` and ``chromium-driver``, installed by
``scripts/ensure_browser.sh`` (``make test`` runs it). Selenium is pointed at both binaries
explicitly (``MLOPS_CHROMIUM``, ``MLOPS_CHROMEDRIVER`` override the paths), so selenium-manager never
downloads a browser or a driver. In CI (``CI`` set) a missing browser fails the tests; elsewhere
they are skipped with the reason. Every page a test looks at is kept as a screenshot under
``test-artifacts/browser/`` of the repository (``MLOPS_TEST_ARTIFACTS`` overrides the folder).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO

CHROMIUM = Path(os.environ.get("MLOPS_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("MLOPS_CHROMEDRIVER", "/usr/bin/chromedriver"))
WINDOW = (1400, 1000)
# A loaded two-core machine renders the React UI in tens of seconds, not one.
PAGE_TIMEOUT = 120.0


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_chromium() -> None:
    """Fail (in CI) or skip (elsewhere) when the browser or its driver is missing."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    if not missing:
        return
    reason = f"{' and '.join(missing)} missing: run scripts/ensure_browser.sh (make test does)"
    if _in_ci():
        pytest.fail(reason)
    pytest.skip(reason)


def artifacts_folder() -> Path:
    folder = Path(os.environ.get("MLOPS_TEST_ARTIFACTS", REPO / "test-artifacts")) / "browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Browser:
    """One headless Chromium session on the Airflow UI at ``base_url``: page steps with explicit waits."""

    def __init__(self, base_url: str, shots: Path) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        options.add_argument("--headless=new")
        options.add_argument(f"--window-size={WINDOW[0]},{WINDOW[1]}")
        options.add_argument("--disable-dev-shm-usage")  # small /dev/shm in containers
        if os.geteuid() == 0:
            options.add_argument("--no-sandbox")  # Chromium refuses to start its sandbox as root
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
        self.base_url = base_url.rstrip("/")
        self.shots = shots
        self.screenshots: list[Path] = []

    def quit(self) -> None:
        self.driver.quit()

    # -- waiting and looking --------------------------------------------------------------------

    def wait(self, condition: Callable[[Any], Any], what: str, timeout: float = PAGE_TIMEOUT) -> Any:
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout, poll_frequency=0.25).until(condition, f"waiting for {what}")

    def find(self, xpath: str, what: str, *, clickable: bool = False, timeout: float = PAGE_TIMEOUT) -> Any:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        locator = (By.XPATH, xpath)
        condition = ec.element_to_be_clickable(locator) if clickable else ec.visibility_of_element_located(locator)
        return self.wait(condition, what, timeout)

    def click(self, element: Any) -> None:
        """Click as a user would; while a toast or an animation covers the element, wait for it to go."""
        from selenium.common.exceptions import ElementClickInterceptedException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)

        def clicked(_driver: Any) -> bool:
            try:
                element.click()
            except ElementClickInterceptedException:
                return False
            return True

        WebDriverWait(self.driver, 30, poll_frequency=0.5).until(clicked, "the element stayed covered for 30 s")

    def text(self) -> str:
        from selenium.webdriver.common.by import By

        return str(self.driver.find_element(By.TAG_NAME, "body").text)

    def screenshot(self, name: str) -> Path:
        path = self.shots / f"{len(self.screenshots) + 1:02d}-{re.sub(r'[^A-Za-z0-9_-]+', '-', name)}.png"
        self.driver.save_screenshot(str(path))
        self.screenshots.append(path)
        return path

    # -- steps ----------------------------------------------------------------------------------

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def log_in(self, username: str, password: str) -> None:
        """Sign in through the login page the auth manager serves (redirected to from any page)."""
        self.open("/")
        self.find("//input[@name='username']", "the login form").send_keys(username)
        self.driver.find_element("xpath", "//input[@name='password']").send_keys(password)
        self.screenshot("login")
        self.click(self.driver.find_element("xpath", "//button[@type='submit']"))
        self.wait(lambda d: "/auth/login" not in d.current_url, "the redirect after signing in")
        self.find("//a[contains(@href, '/dags')]", "the navigation of the signed-in UI")


@pytest.fixture(scope="module")
def browser(request) -> Iterator[Browser]:
    """A headless Chromium for one test module (screenshots in ``test-artifacts/browser/<module>/``)."""
    require_chromium()
    shots = artifacts_folder() / request.module.__name__.rsplit(".", 1)[-1]
    shots.mkdir(parents=True, exist_ok=True)
    for old in shots.glob("*.png"):
        old.unlink()
    started = time.monotonic()
    session = Browser("http://127.0.0.1", shots)
    try:
        yield session
    finally:
        session.quit()
        print(
            f"\nbrowser: {len(session.screenshots)} screenshots in {shots} "
            f"({time.monotonic() - started:.0f} s with Chromium)"
        )
