"""workers/imap.py against a real Dovecot (tests/support/imap.py): new mail is read once, in order, across
reconnects, server restarts and worker restarts; a UIDVALIDITY change re-reads the recent days; IDLE wakes
a wait when mail arrives (polling where the server has no IDLE); flags are never touched; settings that no
retry can fix say which setting is wrong.

Time bounds here are generous ceilings against hangs, never measurements."""

from __future__ import annotations

import datetime as dt
import email
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.imap import USERS, DovecotServer, email_bytes
from workers.imap import (
    FetchedMessage,
    ImapInbox,
    ImapSettings,
    ImapSettingsError,
    ImapUnavailable,
    MailboxPosition,
)

# Far above what each step takes here (well under a second), far below a hang.
PATIENCE_SECONDS = 15


def subjects(messages: list[FetchedMessage]) -> list[str]:
    return [email.message_from_bytes(message.raw)["Subject"] for message in messages]


def in_background(function: Callable, *args, **kwargs):
    """Run `function` in a thread; the future of its result."""
    executor = ThreadPoolExecutor(max_workers=1)
    future = executor.submit(function, *args, **kwargs)
    executor.shutdown(wait=False)
    return future


@pytest.fixture
def inbox(dovecot: DovecotServer):
    inbox = ImapInbox(dovecot.settings(), retry_for=PATIENCE_SECONDS)
    yield inbox
    inbox.close()


def read_from_now(inbox: ImapInbox) -> MailboxPosition:
    position, messages = inbox.fetch_new(None)
    assert messages == []
    return position


# --- reading ----------------------------------------------------------------------------------------------


def test_the_first_start_reads_only_mail_that_arrives_afterwards(dovecot, inbox):
    dovecot.append(email_bytes("already there"))
    position = read_from_now(inbox)
    first = dovecot.append(email_bytes("first"))
    second = dovecot.append(email_bytes("second"))

    position, messages = inbox.fetch_new(position)

    assert subjects(messages) == ["first", "second"]
    assert [m.uid for m in messages] == [first, second]
    assert position == MailboxPosition(dovecot.uidvalidity(), second)
    assert inbox.fetch_new(position) == (position, [])


def test_the_raw_message_is_the_whole_message(dovecot, inbox):
    position = read_from_now(inbox)
    sent = email_bytes("whole", "Line one\r\nLine two")
    dovecot.append(sent)
    _, [message] = inbox.fetch_new(position)
    assert message.raw == sent


def test_a_long_backlog_comes_in_pages_oldest_first(dovecot, inbox):
    position = read_from_now(inbox)
    for n in range(5):
        dovecot.append(email_bytes(f"m{n}"))
    pages = []
    while True:
        position, messages = inbox.fetch_new(position, limit=2)
        if not messages:
            break
        pages.append(subjects(messages))
    assert pages == [["m0", "m1"], ["m2", "m3"], ["m4"]]


def test_another_inbox_given_the_same_position_reads_nothing_twice(dovecot):
    """The worker restarted: a new ImapInbox (a new connection) goes on from the stored position."""
    with ImapInbox(dovecot.settings()) as before_restart:
        position = read_from_now(before_restart)
        dovecot.append(email_bytes("read before the restart"))
        position, messages = before_restart.fetch_new(position)
        assert subjects(messages) == ["read before the restart"]
    dovecot.append(email_bytes("arrived during the restart"))

    with ImapInbox(dovecot.settings()) as after_restart:
        position, messages = after_restart.fetch_new(position)
        assert subjects(messages) == ["arrived during the restart"]
        assert after_restart.fetch_new(position) == (position, [])


def test_an_expunged_message_is_passed_over(dovecot, inbox):
    position = read_from_now(inbox)
    dovecot.append(email_bytes("kept"))
    gone = dovecot.append(email_bytes("deleted before it was read"))
    last = dovecot.append(email_bytes("kept too"))
    with dovecot.client() as client:
        client.select_folder("INBOX")
        client.delete_messages([gone])
        client.expunge()
    position, messages = inbox.fetch_new(position)
    assert subjects(messages) == ["kept", "kept too"]
    assert position.last_uid == last


def test_flags_are_left_as_they_were(dovecot, inbox):
    position = read_from_now(inbox)
    unread = dovecot.append(email_bytes("unread"))
    flagged = dovecot.append(email_bytes("flagged"), flags=("\\Flagged",))
    _, messages = inbox.fetch_new(position)
    assert len(messages) == 2
    assert b"\\Seen" not in dovecot.flags(unread)
    assert set(dovecot.flags(flagged)) - {b"\\Recent"} == {b"\\Flagged"}


def test_another_folder_can_be_read(dovecot):
    with dovecot.client() as client:
        client.create_folder("Replies")
    with ImapInbox(dovecot.settings(folder="Replies")) as inbox:
        position = read_from_now(inbox)
        dovecot.append(email_bytes("in INBOX"))
        dovecot.append(email_bytes("in Replies"), folder="Replies")
        _, messages = inbox.fetch_new(position)
    assert subjects(messages) == ["in Replies"]


# --- disconnects ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("crash", [False, True], ids=["restart", "crash"])
def test_mail_that_arrived_while_the_server_was_restarted_is_read_after_reconnecting(dovecot, inbox, crash):
    position = read_from_now(inbox)
    dovecot.append(email_bytes("before"))
    dovecot.restart(crash=crash)  # the inbox's connection is cut
    dovecot.append(email_bytes("after"))

    position, messages = inbox.fetch_new(position)

    assert subjects(messages) == ["before", "after"]
    assert inbox.fetch_new(position) == (position, [])


def test_a_server_that_comes_back_within_retry_for_is_waited_for(dovecot, inbox, caplog):
    position = read_from_now(inbox)
    dovecot.append(email_bytes("waiting"))
    dovecot.kill()
    threading.Timer(1.0, dovecot.start).start()

    with caplog.at_level(logging.INFO, logger="drumbeat.imap"):
        _, messages = inbox.fetch_new(position)

    assert subjects(messages) == ["waiting"]
    events = [record.getMessage() for record in caplog.records]
    assert "imap_unavailable" in events and events[-1] == "imap_reconnected"


def test_a_server_gone_for_longer_than_retry_for_is_unavailable(dovecot):
    settings = dovecot.settings()
    dovecot.kill()
    started = time.monotonic()
    with pytest.raises(ImapUnavailable, match=f"{settings.address} unavailable") as raised:
        ImapInbox(settings, retry_for=1).fetch_new(None)
    assert time.monotonic() - started < PATIENCE_SECONDS
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)


def test_a_server_that_accepts_but_never_answers_times_out():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # connections wait in its backlog, unanswered
        settings = ImapSettings("127.0.0.1", silent.getsockname()[1], "none", "alice", "pw", timeout=0.2)
        with pytest.raises(ImapUnavailable) as raised:
            ImapInbox(settings, retry_for=1).fetch_new(None)
    assert isinstance(raised.value.__cause__, TimeoutError)


def test_a_dovecot_crash_during_a_wait_ends_it_and_the_next_wait_idles_again(dovecot, inbox):
    position = read_from_now(inbox)
    waiting = in_background(inbox.wait_for_mail, 60)
    time.sleep(0.3)  # in IDLE by now, most likely; earlier is fine too
    # Killed, not stopped: on SIGTERM Dovecot's IMAP processes keep their sessions 10 s longer before
    # their BYE, which the wait would handle just the same, 10 s later.
    dovecot.restart(crash=True)
    # The cut connection may have hidden an announcement: the wait says mail may be there.
    assert waiting.result(timeout=PATIENCE_SECONDS) is True
    assert inbox.fetch_new(position) == (position, [])

    waiting = in_background(inbox.wait_for_mail, 60)
    time.sleep(0.3)
    dovecot.append(email_bytes("after the restart"))
    assert waiting.result(timeout=PATIENCE_SECONDS) is True
    _, messages = inbox.fetch_new(position)
    assert subjects(messages) == ["after the restart"]


# --- waiting ----------------------------------------------------------------------------------------------


def test_idle_wakes_up_when_mail_arrives(dovecot, inbox):
    position = read_from_now(inbox)
    waiting = in_background(inbox.wait_for_mail, 60)
    time.sleep(0.5)
    assert not waiting.done()
    dovecot.append(email_bytes("wake up"))
    assert waiting.result(timeout=PATIENCE_SECONDS) is True
    _, messages = inbox.fetch_new(position)
    assert subjects(messages) == ["wake up"]


def test_a_quiet_wait_ends_at_its_timeout(inbox):
    read_from_now(inbox)
    assert inbox.wait_for_mail(0.3) is False
    assert inbox.wait_for_mail(0.3) is False  # the connection is still good for another IDLE


def test_a_wait_after_a_full_page_returns_at_once(dovecot, inbox):
    position = read_from_now(inbox)
    dovecot.append(email_bytes("one"))
    dovecot.append(email_bytes("two"))
    position, _ = inbox.fetch_new(position, limit=1)
    started = time.monotonic()
    assert inbox.wait_for_mail(60) is True
    assert time.monotonic() - started < PATIENCE_SECONDS


def test_mail_between_a_fetch_and_the_wait_is_not_waited_for(dovecot, inbox):
    read_from_now(inbox)
    dovecot.append(email_bytes("arrived before the IDLE began"))
    assert inbox.wait_for_mail(60) is True


def test_a_wait_ends_when_stopping_is_set(inbox):
    read_from_now(inbox)
    stopping = threading.Event()
    waiting = in_background(inbox.wait_for_mail, 60, stopping=stopping)
    time.sleep(0.3)
    stopping.set()
    assert waiting.result(timeout=PATIENCE_SECONDS) is False


def test_without_idle_the_server_is_polled(dovecot_without_idle):
    server = dovecot_without_idle
    with ImapInbox(server.settings(), poll_seconds=0.2) as inbox:
        position = read_from_now(inbox)
        assert not inbox._connection().has_capability("IDLE")
        assert inbox.wait_for_mail(0.5) is False
        waiting = in_background(inbox.wait_for_mail, 60)
        time.sleep(0.3)
        server.append(email_bytes("polled"))
        assert waiting.result(timeout=PATIENCE_SECONDS) is True
        _, messages = inbox.fetch_new(position)
    assert subjects(messages) == ["polled"]


# --- UIDVALIDITY --------------------------------------------------------------------------------------------


def test_a_uidvalidity_change_reads_the_recent_days_again(dovecot, inbox, caplog):
    now = dt.datetime.now(dt.UTC)
    dovecot.append(email_bytes("a month old"), received=now - dt.timedelta(days=30))
    position = read_from_now(inbox)
    dovecot.append(email_bytes("yesterday"), received=now - dt.timedelta(days=1))
    dovecot.append(email_bytes("today"))
    position, messages = inbox.fetch_new(position)
    assert subjects(messages) == ["yesterday", "today"]

    new_uidvalidity = dovecot.reset_uidvalidity()  # the mailbox was rebuilt: every UID is new
    dovecot.append(email_bytes("after the rebuild"))
    with caplog.at_level(logging.WARNING, logger="drumbeat.imap"):
        position, messages = inbox.fetch_new(position)

    # Read again since resync_days (the consumer drops what it has by Message-ID); the old one is not.
    assert subjects(messages) == ["yesterday", "today", "after the rebuild"]
    assert position.uidvalidity == new_uidvalidity
    assert inbox.fetch_new(position) == (position, [])
    # (after an imap_unavailable: the rebuild cut the connection)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING][-1:] == [
        "imap_uidvalidity_changed"
    ]


def test_a_uidvalidity_change_with_nothing_recent_reads_from_now(dovecot, inbox):
    dovecot.append(email_bytes("old"), received=dt.datetime.now(dt.UTC) - dt.timedelta(days=30))
    position = read_from_now(inbox)
    new_uidvalidity = dovecot.reset_uidvalidity()
    position, messages = inbox.fetch_new(position)
    assert messages == [] and position.uidvalidity == new_uidvalidity
    dovecot.append(email_bytes("new"))
    _, messages = inbox.fetch_new(position)
    assert subjects(messages) == ["new"]


# --- TLS and login ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_tls_connections_read_mail(dovecot, security):
    context = dovecot.certificate.client_context()
    with ImapInbox(dovecot.settings(security=security), ssl_context=context) as inbox:
        position = read_from_now(inbox)
        dovecot.append(email_bytes(f"over {security}"))
        _, messages = inbox.fetch_new(position)
        assert subjects(messages) == [f"over {security}"]
        assert inbox.wait_for_mail(0.2) is False


def test_a_password_that_is_not_ascii_logs_in(dovecot):
    with ImapInbox(dovecot.settings(user="carol")) as inbox:
        read_from_now(inbox)


def test_a_wrong_password_names_the_settings_and_never_the_password(dovecot):
    settings = dovecot.settings(password="not-the-password")
    started = time.monotonic()
    with pytest.raises(ImapSettingsError, match=r"refused the login.*username and password") as raised:
        ImapInbox(settings, retry_for=PATIENCE_SECONDS).fetch_new(None)
    assert raised.value.settings == ("username", "password")
    assert "not-the-password" not in str(raised.value)
    assert time.monotonic() - started < PATIENCE_SECONDS  # not retried


def test_a_missing_folder_names_the_folder(dovecot):
    with pytest.raises(ImapSettingsError, match="folder 'Nope'") as raised:
        ImapInbox(dovecot.settings(folder="Nope")).fetch_new(None)
    assert raised.value.settings == ("folder",)


def test_an_untrusted_certificate_names_host_and_security(dovecot):
    with pytest.raises(ImapSettingsError, match="does not verify") as raised:
        ImapInbox(dovecot.settings(security="ssl")).fetch_new(None)  # the system's CAs only
    assert raised.value.settings == ("host", "security")


def test_tls_on_the_plain_port_names_port_and_security(dovecot):
    settings = dovecot.settings(security="ssl", port=dovecot.port)
    with pytest.raises(ImapSettingsError, match="does not speak TLS") as raised:
        ImapInbox(settings, ssl_context=dovecot.certificate.client_context()).fetch_new(None)
    assert raised.value.settings == ("port", "security")


def test_the_password_is_not_in_the_settings_repr():
    settings = ImapSettings("imap.example.com", 993, "ssl", "me@example.com", USERS["alice"])
    assert USERS["alice"] not in repr(settings)


@pytest.mark.parametrize(
    ("changes", "setting"),
    [
        ({"security": "tls"}, "security"),
        ({"port": 0}, "port"),
        ({"host": ""}, "host"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_malformed_settings_are_refused_at_once(changes, setting):
    values = {"host": "imap.example.com", "port": 993, "security": "ssl", "username": "me", "password": "pw"}
    with pytest.raises(ImapSettingsError) as raised:
        ImapSettings(**(values | changes))
    assert raised.value.settings == (setting,)
