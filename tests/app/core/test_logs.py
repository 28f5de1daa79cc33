"""app/core/logs.py: the JSON and text line formats, the auto format choice, levels, quiet libraries and
correlation ids."""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import sys
import threading
from collections.abc import Iterator

import pytest

from app.core.logs import (
    QUIET_LOGGERS,
    DrumbeatHandler,
    JsonFormatter,
    TextFormatter,
    configure_logging,
    correlation,
    current_correlation_id,
    make_handler,
    resolve_format,
    resolve_level,
)
from tests.log_capture import captured_logs

IDS = {"workspace_id": "w-1", "enrollment_id": "e-1"}


def record(msg: str = "sent", name: str = "drumbeat.dispatch", level: int = logging.INFO, **extra):
    logger = logging.getLogger(name)
    return logger.makeRecord(name, level, "file.py", 1, msg, (), None, extra=extra)


class FakeStream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


# --- formats -----------------------------------------------------------------------------------------


def test_a_json_line_has_the_time_level_logger_message_and_fields():
    line = json.loads(JsonFormatter().format(record(channel="sms", attempt=2, **IDS)))
    assert line == {
        "ts": line["ts"],
        "level": "INFO",
        "logger": "drumbeat.dispatch",
        "msg": "sent",
        "channel": "sms",
        "attempt": 2,
        **IDS,
    }
    stamp = dt.datetime.fromisoformat(line["ts"])
    assert stamp.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - stamp).total_seconds()) < 60


def test_a_json_line_carries_the_exception_and_is_still_one_line():
    try:
        raise ValueError("boom")
    except ValueError:
        failing = logging.getLogger("drumbeat.x").makeRecord(
            "drumbeat.x", logging.ERROR, "f.py", 1, "record_failed", (), sys.exc_info()
        )
    text = JsonFormatter().format(failing)
    assert "\n" not in text
    line = json.loads(text)
    assert line["level"] == "ERROR" and "ValueError: boom" in line["exc"] and "Traceback" in line["exc"]


def test_json_fields_of_any_type_are_written_as_text_when_json_has_no_such_type():
    instant = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    line = json.loads(JsonFormatter().format(record(at=instant, nothing=None)))
    assert line["at"] == "2026-01-02 03:04:05+00:00" and "nothing" not in line


def test_a_text_line_reads_as_one_line_with_the_facts_first_and_ids_after():
    text = TextFormatter().format(record(channel="sms", correlation_id="c-1", **IDS))
    assert re.fullmatch(
        r"\d\d:\d\d:\d\d INFO sent channel=sms workspace=w-1 enrollment=e-1 correlation=c-1", text
    )


def test_a_text_line_quotes_values_with_spaces_and_names_other_libraries():
    text = TextFormatter().format(record("Starting job", name="procrastinate.worker", action="a b", n=3))
    assert text.endswith('INFO procrastinate.worker: Starting job action="a b" n=3')


# --- configuration -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "tty", "chosen"),
    [
        ("auto", True, "text"),
        ("auto", False, "json"),
        (None, True, "text"),
        (None, False, "json"),
        ("AUTO", True, "text"),
        ("json", True, "json"),
        ("text", False, "text"),
        ("yaml", False, "json"),  # settings.py reports a bad value; logging still works
    ],
)
def test_auto_means_text_on_a_terminal_and_json_otherwise(asked, tty, chosen):
    assert resolve_format(asked, FakeStream(tty)) == chosen


def test_a_stream_that_cannot_say_whether_it_is_a_terminal_gets_json():
    closed = io.StringIO()
    closed.close()  # isatty() raises
    assert resolve_format("auto", closed) == "json"
    assert resolve_format("auto", object()) == "json"


@pytest.mark.parametrize(
    ("asked", "level"),
    [("debug", logging.DEBUG), ("WARNING", logging.WARNING), ("ERROR", logging.ERROR), (None, logging.INFO)],
)
def test_levels_by_name(asked, level):
    assert resolve_level(asked) == level


@pytest.mark.parametrize("bad", ["verbose", "", "CRITICAL", "10"])
def test_an_unknown_level_falls_back_to_info(bad):
    assert resolve_level(bad) == logging.INFO


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back after the test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    quiet = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name, previous in quiet.items():
        logging.getLogger(name).setLevel(previous)


def test_configuring_twice_replaces_its_handler_and_keeps_others(restored_logging):
    root = logging.getLogger()
    others = [h for h in root.handlers if not isinstance(h, DrumbeatHandler)]
    configure_logging("json", "DEBUG")
    configure_logging("text", "WARNING")
    ours = [h for h in root.handlers if isinstance(h, DrumbeatHandler)]
    assert len(ours) == 1 and isinstance(ours[0].formatter, TextFormatter)
    assert [h for h in root.handlers if not isinstance(h, DrumbeatHandler)] == others
    assert root.level == logging.WARNING


def test_noisy_libraries_are_held_at_warning_or_the_level_asked_when_higher(restored_logging):
    configure_logging("json", "DEBUG")
    assert {logging.getLogger(name).level for name in QUIET_LOGGERS} == {logging.WARNING}
    assert logging.getLogger("drumbeat.dispatch").getEffectiveLevel() == logging.DEBUG
    configure_logging("json", "ERROR")
    assert {logging.getLogger(name).level for name in QUIET_LOGGERS} == {logging.ERROR}
    assert {"pgserver", "procrastinate", "uvicorn.access", "psycopg.pool", "twilio"} <= set(QUIET_LOGGERS)


# --- correlation ids ---------------------------------------------------------------------------------


def test_lines_logged_in_a_correlation_block_carry_its_id():
    log = logging.getLogger("drumbeat.test")
    with captured_logs() as captured:
        log.info("before")
        with correlation("req-1"):
            log.info("inside", extra={"enrollment_id": "e-1"})
            with correlation() as kept:  # a batch inside a job keeps the job's id
                log.info("nested")
            with correlation("other"):
                log.info("rebound")
            log.info("explicit", extra={"correlation_id": "given"})
        log.info("after")
    ids = {line["msg"]: line.get("correlation_id") for line in captured.lines()}
    assert ids == {
        "before": None,
        "inside": "req-1",
        "nested": "req-1",
        "rebound": "other",
        "explicit": "given",
        "after": None,
    }
    assert kept == "req-1" and current_correlation_id() is None


def test_without_one_bound_a_correlation_block_makes_a_new_id():
    with correlation() as first, correlation() as same:
        assert same == first and re.fullmatch("[0-9a-f]{32}", first)
    with correlation() as second:
        assert second != first


def test_a_correlation_id_stays_in_its_own_thread():
    seen: list[str | None] = []
    with correlation("main-thread"):
        worker = threading.Thread(target=lambda: seen.append(current_correlation_id()))
        worker.start()
        worker.join()
    assert seen == [None]


def test_make_handler_writes_the_format_asked():
    stream = io.StringIO()
    handler = make_handler("text", stream)
    handler.handle(record(channel="sms"))
    assert stream.getvalue().rstrip().endswith("INFO sent channel=sms")
