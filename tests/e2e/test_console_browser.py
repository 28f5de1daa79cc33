"""The console in a real browser (headless Chromium) against the real `drumbeat api` and `drumbeat worker`
processes: sign in with an API key, build a three-step sequence in the builder, activate it, enroll a
contact, see the planned timeline, let the worker send the first message, complete the rep's call task,
and find the message on the messages page and the contact's timeline. On every page: nothing loaded from
anywhere but the server, and no error in the browser's log. A failing test leaves a screenshot of the
page it was on (its path is in the failure)."""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.sql.factories import new_tenant
from tests.support.browser import browser_errors, chromium, foreign_requests
from tests.support.processes import (
    DRUMBEAT,
    api_server,
    drumbeat_environment,
    free_port,
    midday_timezone,
)


def environment(db_url: str) -> dict[str, str]:
    return drumbeat_environment(DATABASE_URL=db_url, DRUMBEAT_TRANSPORT="outbox", DRUMBEAT_LOG_FORMAT="json")


@pytest.fixture
def server(db_url) -> Iterator[str]:
    with api_server(environment(db_url)) as base:
        yield base


@pytest.fixture
def worker(db_url) -> Iterator[subprocess.Popen]:
    process = subprocess.Popen(
        [DRUMBEAT, "worker", "--concurrency", "2"],
        env=environment(db_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(30)


@pytest.fixture
def workspace(db_url) -> dict:
    """A workspace with an SMS sender, one contact (where it is midday now, so SMS quiet hours never hold
    the first message back) and an owner API key."""
    with psycopg.connect(db_url) as conn:
        tenant = new_tenant(conn)
        [contact] = tenant.contacts(
            {
                "phone": "+15550109876",
                "first_name": "Ada",
                "last_name": "Lovelace",
                "company": "Analytical",
                "timezone": midday_timezone(),
            }
        )
        conn.execute("RESET ROLE")
        [(_, token)] = conn.execute(
            "SELECT * FROM drumbeat.issue_api_key(%s, 'console', 'owner', NULL)", (tenant.workspace_id,)
        ).fetchall()
        conn.commit()
    return {"contact": str(contact), "token": token}


class Page:
    """The browser on the console, with the checks every page gets."""

    def __init__(self, driver, base: str, shots: Path):
        self.driver, self.base, self.shots = driver, base, shots
        self.builder = ""  # the path of the sequence the story builds

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)
        self.checked()

    def checked(self) -> None:
        assert foreign_requests(self.driver, self.base) == []
        assert browser_errors(self.driver) == []

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def submit(self, css: str) -> None:
        """Click a button that submits its form, and wait for the page the server answers with."""
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        before = self.find("html")
        self.find(css).click()
        WebDriverWait(self.driver, 15).until(expected_conditions.staleness_of(before))
        WebDriverWait(self.driver, 15).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        self.checked()

    def type_and_enter(self, value: str) -> None:
        """Type into the focused field and press Enter, as a keyboard user does."""
        from selenium.webdriver.common.keys import Keys

        before = self.find("html")
        self.driver.switch_to.active_element.send_keys(value + Keys.ENTER)
        self.wait_for_new_page(before)

    def submit_link(self, text: str) -> None:
        """Follow a link by its text, and wait for the page it leads to."""
        before = self.find("html")
        self.driver.find_element("link text", text).click()
        self.wait_for_new_page(before)

    def wait_for_new_page(self, before) -> None:
        from selenium.webdriver.support import expected_conditions
        from selenium.webdriver.support.wait import WebDriverWait

        WebDriverWait(self.driver, 15).until(expected_conditions.staleness_of(before))
        WebDriverWait(self.driver, 15).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        self.checked()

    def sticking_out(self) -> list[str]:
        """What sticks out sideways (the page would need horizontal scrolling): none, or the elements
        reaching past the window's right edge."""
        return self.driver.execute_script(
            "if (document.documentElement.scrollWidth <= window.innerWidth) return [];"
            "return [...document.querySelectorAll('main *')]"
            ".filter(e => e.getBoundingClientRect().right > window.innerWidth + 1)"
            ".map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + (e.className ? '.' + e.className : ''))"
            ".slice(0, 8).concat(['the page'])"
        )

    def text(self) -> str:
        return self.find("main").text

    def wait_for_text(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.text():
            assert time.monotonic() < deadline, f"{text!r} never appeared in: {self.text()}"
            time.sleep(0.1)

    def screenshot(self, name: str) -> Path:
        """The page from its top, saved in the test's own directory (the README's come from here)."""
        self.driver.execute_script("window.scrollTo(0, 0)")
        path = self.shots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path


def wait_for(db_url: str, sql: str, what: str, worker: subprocess.Popen, timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(db_url) as conn:
            if conn.execute(sql).fetchone()[0]:
                return
        assert worker.poll() is None, "the worker exited"
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.3)


def test_a_rep_builds_runs_and_works_a_sequence_in_the_browser(db_url, server, worker, workspace, tmp_path):
    with chromium() as driver:
        page = Page(driver, server, tmp_path)
        try:
            run_the_story(page, db_url, workspace, worker)
        except BaseException as error:
            shot = page.screenshot("failure")
            raise AssertionError(f"{error} (screenshot: {shot})") from error


def run_the_story(page: Page, db_url: str, workspace: dict, worker: subprocess.Popen) -> None:
    # Signed out, a console page sends the browser to sign in; then back where it was going.
    page.open("/console/tasks")
    assert page.driver.current_url.startswith(page.base + "/console/login")
    # With the keyboard alone: the key field has the focus, Enter signs in.
    assert page.driver.switch_to.active_element.get_attribute("id") == "api_key"
    page.type_and_enter(workspace["token"])
    assert page.driver.current_url.endswith("/console/tasks")

    # A new sequence, with its first SMS, then two more steps through the builder.
    page.open("/console/sequences")
    page.fill("#new-name", "Browser cadence")
    page.fill("#new-body", "Hi {{ contact.first_name }}, quick question about {{ contact.company }}?")
    page.submit("section.card form button[type=submit]")
    page.wait_for_text("Sequence created")
    page.builder = page.driver.current_url.removeprefix(page.base).split("?")[0]
    add_step(
        page,
        kind="call",
        name="Call Ada",
        delay=("0", "minutes"),
        task="Call {{ contact.first_name }} at {{ contact.phone }}",
    )
    add_step(
        page, kind="sms", name="Nudge", delay=("2", "days"), body="Still there, {{ contact.first_name }}?"
    )
    days = [element.text for element in page.driver.find_elements("css selector", "ol.steps .day")]
    assert days == ["Day 1", "Day 1", "Day 3"]

    # The live preview renders the template for the chosen contact, with the segment count.
    page.find("ol.steps li.step:nth-child(3) details summary").click()
    page.wait_for_text("Still there, Ada?")
    assert "1 SMS segment" in page.text()

    page.submit("button[value=activate]")
    page.wait_for_text("Sequence activated")

    # Enroll the contact by phone; the planned timeline shows each step in their zone and the workspace's.
    page.fill("#enroll-contacts", "+15550109876")
    page.submit("#enroll-heading + form button[type=submit]")
    assert "enrolled" in page.find(".outcomes").text
    page.submit("#timeline-heading + form button[type=submit]")
    rows = page.driver.find_elements("css selector", "table.timeline tbody tr")
    assert len(rows) == 3, page.find("table.timeline").text
    page.screenshot("builder")

    # The worker sends the first SMS (to the outbox) and creates the call task.
    wait_for(db_url, "SELECT count(*) FROM drumbeat.outbox", "the first SMS", worker)
    wait_for(db_url, "SELECT count(*) FROM drumbeat.tasks", "the call task", worker)

    page.open("/console/tasks")
    task = page.find("li.task")
    assert "Call Ada at +15550109876" in task.text and "Ada Lovelace" in task.text
    page.screenshot("tasks")
    from selenium.webdriver.support.select import Select

    Select(page.find("li.task select[name=outcome]")).select_by_value("connected")
    page.fill("li.task input[name=notes]", "Wants a demo")
    page.submit("li.task button[type=submit]")
    page.wait_for_text("Task completed")
    assert "Nothing due" in page.text()
    page.open("/console/tasks?tab=completed")
    assert "connected" in page.text()

    page.open("/console/messages")
    assert "Hi Ada, quick question about Analytical?" in page.text()
    assert "outbox" in page.text()

    page.open(f"/console/contacts/{workspace['contact']}")
    timeline = page.find("ol.timeline-events").text
    for kind in ("enrolled", "sent", "task completed"):
        assert kind in timeline, timeline

    # At phone width every page still fits: no sideways scrolling.
    page.driver.set_window_size(390, 844)
    for path in (
        "/console/sequences",
        "/console/enrollments",
        "/console/tasks?tab=completed",
        "/console/messages",
        "/console/contacts",
        "/console/settings",
        page.builder,
    ):
        page.open(path)
        assert page.sticking_out() == [], path
    page.screenshot("builder-phone")
    page.driver.set_window_size(1280, 900)

    # Signing out ends the session: the next console page asks to sign in again.
    page.submit(".top .who button.link")
    page.open("/console/sequences")
    assert page.driver.current_url.startswith(page.base + "/console/login")


def add_step(
    page: Page, *, kind: str, name: str, delay: tuple[str, str], task: str = "", body: str = ""
) -> None:
    from selenium.webdriver.support.select import Select

    form = "details.card form.step-form"
    if page.find("details.card").get_attribute("open") is None:
        page.find("details.card summary").click()
    Select(page.find(f"{form} select[name=kind]")).select_by_value(kind)
    page.fill(f"{form} input[name=name]", name)
    page.fill(f"{form} input[name=delay_value]", delay[0])
    Select(page.find(f"{form} select[name=delay_unit]")).select_by_value(delay[1])
    if task:
        page.fill(f"{form} textarea[name=task_description]", task)
    if body:
        page.fill(f"{form} textarea[name=body]", body)
    page.submit(f"{form} button[type=submit]")
    page.wait_for_text("Step added")


class Up:
    """`drumbeat up` on the test's database, as a new user runs it; its banner read from stdout."""

    def __init__(self, db_url: str):
        environment = drumbeat_environment(DATABASE_URL=db_url, DRUMBEAT_PORT=str(free_port()))
        self.process = subprocess.Popen(
            [DRUMBEAT, "up"], env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.banner: list[str] = []
        for line in self.process.stdout:
            self.banner.append(line)
            if line.startswith("Ctrl-C stops everything"):
                return
        raise AssertionError(f"drumbeat up exited before serving: {self.banner}")

    def shown(self, pattern: str) -> str:
        found = re.search(pattern, "".join(self.banner))
        assert found, (pattern, self.banner)
        return found.group(1)

    def stop(self) -> None:
        self.process.send_signal(signal.SIGINT)
        self.process.wait(60)


def test_a_new_user_runs_drumbeat_up_signs_in_and_sees_a_sequence_run(db_url, tmp_path):
    """The issue's "done when": from the banner of `drumbeat up` alone, a new user signs in, follows the
    console's first steps (a sender, a contact, a sequence, an enrollment) and sees the message go out."""
    up = Up(db_url)
    try:
        console_url, token = up.shown(r"console\s+(\S+)"), up.shown(r"API key\s+(dbk_\S+)")
        with chromium() as driver:
            page = Page(driver, console_url.removesuffix("/console/"), tmp_path)
            try:
                first_steps(page, console_url, token)
            except BaseException as error:
                raise AssertionError(f"{error} (screenshot: {page.screenshot('failure')})") from error
    finally:
        up.stop()


def first_steps(page: Page, console_url: str, token: str) -> None:
    page.driver.get(console_url)
    page.checked()
    page.type_and_enter(token)
    assert "Getting started" in page.text()
    page.screenshot("getting-started")
    page.submit_link("Add a sender")
    page.fill("#sender-address", "+12025550100")
    page.submit("#senders-heading ~ form button[type=submit]")
    page.wait_for_text("Sender added")
    page.open("/console/contacts")
    for field, value in (("first_name", "Grace"), ("phone", "+12125550199"), ("timezone", midday_timezone())):
        page.fill(f"#c-{field}", value)
    page.submit("#add-contact-heading + form button[type=submit]")
    page.wait_for_text("Contact saved")
    page.open("/console/sequences")
    page.fill("#new-name", "First steps")
    page.fill("#new-body", "Hello {{ contact.first_name }}, welcome!")
    page.submit("section.card form[action='/console/sequences'] button[type=submit]")
    page.submit("button[value=activate]")
    page.fill("#enroll-contacts", "+12125550199")
    page.submit("#enroll-heading + form button[type=submit]")
    assert "enrolled" in page.find(".outcomes").text
    deadline = time.monotonic() + 40
    while True:  # the worker `drumbeat up` runs sends it (to the outbox: no provider is configured)
        page.open("/console/messages")
        if "Hello Grace, welcome!" in page.text():
            break
        assert time.monotonic() < deadline, page.text()
        time.sleep(1)
    page.open("/console/sequences")
    assert "Getting started" not in page.text()  # every first step done
