"""Watching email senders' inboxes over IMAP for replies (README, "Inbound email"): the other way in besides
the inbound email webhook, for a mailbox no inbound-parse service can be pointed at (a rep's own).

`drumbeat worker` (and `drumbeat up`) run a `Mailboxes` supervisor beside the dispatcher. Every
REFRESH_SECONDS it reads the mailboxes to watch (drumbeat.watched_mailboxes) and keeps one `MailboxWatcher`
thread per mailbox this process holds. Several worker processes share the mailboxes: a mailbox is watched
by the process whose watcher holds its advisory lock, a session lock on the watcher's own database
connection, so when that process dies the lock goes with it and another process takes the mailbox over at
its next refresh.

A watcher reads what arrived after the stored position (workers/imap.py: UIDVALIDITY and last UID), hands
each message to drumbeat.inbound_email (app/core/inbound_email.py reads it first) and stores the new
position in the same transaction, then waits with IDLE (or polls, when the server lacks it) for more. A
message is thus handled at least once whatever fails in between, and once only: inbound_email drops one it
has seen (by Message-ID), whether it came this way or through the webhook. What stops a watcher (a login
refused, a password sealed under another DRUMBEAT_SECRET_KEY, a server down) is stored as the mailbox's
error, for the workspace to see; it tries again after ERROR_RETRY_SECONDS, or at once when the mailbox's
settings change."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
from typing import Any

import msgspec
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from app.core.inbound_email import parse_inbound_email
from app.core.secret_box import SecretBox, SecretUnreadable
from app.core.settings import Settings
from workers.imap import (
    FetchedMessage,
    ImapError,
    ImapInbox,
    ImapSettings,
    ImapSettingsError,
    MailboxPosition,
)

log = logging.getLogger("drumbeat.mailboxes")

REFRESH_SECONDS = 30.0
WAIT_SECONDS = 25.0  # one IDLE round; a watcher notices a stop or a settings change between rounds
ERROR_RETRY_SECONDS = 60.0
# Settings a retry cannot fix (a refused login): each try is a login, and providers lock accounts out that
# keep failing, so wait long, or until the mailbox's settings change (the supervisor then starts afresh).
SETTINGS_RETRY_SECONDS = 15 * 60.0
FETCH_LIMIT = 100


class Mailboxes(threading.Thread):
    """The supervisor: one watcher per mailbox this process holds, started, restarted and stopped as the
    mailboxes come, change and go."""

    def __init__(self, database_url: str, box: SecretBox | None, *, refresh_seconds: float = REFRESH_SECONDS):
        super().__init__(name="mailboxes", daemon=True)
        self.database_url = database_url
        self.box = box
        self.refresh_seconds = refresh_seconds
        self.stopping = threading.Event()
        self.watchers: dict[str, MailboxWatcher] = {}

    @classmethod
    def for_settings(cls, settings: Settings) -> Mailboxes:
        return cls(settings.database_url, SecretBox(settings.secret_key) if settings.secret_key else None)

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.refresh()
            except psycopg.Error as error:  # the database is away: the watchers wait for it too
                log.warning("mailboxes_unavailable", extra={"error": str(error).strip()})
            self.stopping.wait(self.refresh_seconds)
        for watcher in self.watchers.values():
            watcher.stop()

    def refresh(self) -> None:
        with psycopg.connect(self.database_url, autocommit=True, row_factory=dict_row) as conn:
            rows = {
                str(row["sender_id"]): row
                for row in conn.execute("SELECT * FROM drumbeat.watched_mailboxes()")
            }
        for sender_id, watcher in list(self.watchers.items()):
            row = rows.get(sender_id)
            if not watcher.is_alive() or row is None or row["updated_at"] != watcher.mailbox["updated_at"]:
                watcher.stop()
                del self.watchers[sender_id]
        for sender_id, row in rows.items():
            if sender_id not in self.watchers:
                watcher = MailboxWatcher(self.database_url, row, self.box)
                watcher.start()
                self.watchers[sender_id] = watcher

    def stop(self) -> None:
        self.stopping.set()


class MailboxWatcher(threading.Thread):
    """One mailbox, watched for as long as this thread holds its lock and its settings stay the same."""

    def __init__(self, database_url: str, mailbox: dict[str, Any], box: SecretBox | None):
        super().__init__(name=f"mailbox {mailbox['sender_id']}", daemon=True)
        self.database_url = database_url
        self.mailbox = mailbox
        self.box = box
        self.stopping = threading.Event()

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                if self._locked(conn):
                    self._watch(conn)
        except psycopg.Error as error:  # the supervisor starts another watcher at its next refresh
            log.warning(
                "mailbox_database_lost",
                extra={"sender_id": str(self.mailbox["sender_id"]), "error": str(error).strip()},
            )

    def _locked(self, conn: psycopg.Connection) -> bool:
        """Whether this process may watch the mailbox: no other watcher (here or in another worker) does."""
        key = f"drumbeat.mailbox:{self.mailbox['sender_id']}"
        return conn.execute("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (key,)).fetchone()[0]

    def _watch(self, conn: psycopg.Connection) -> None:
        try:
            inbox = ImapInbox(self._settings())
        except (ImapError, SecretUnreadable) as error:
            self._failed(conn, error)
            return
        position = self._stored_position()
        with contextlib.closing(inbox):
            while not self.stopping.is_set():
                try:
                    position, messages = inbox.fetch_new(position, limit=FETCH_LIMIT)
                    self._handle(conn, messages, position)
                    if len(messages) < FETCH_LIMIT:
                        inbox.wait_for_mail(WAIT_SECONDS, stopping=self.stopping)
                except ImapError as error:
                    self._failed(conn, error)
                    settings_wrong = isinstance(error, ImapSettingsError)
                    self.stopping.wait(SETTINGS_RETRY_SECONDS if settings_wrong else ERROR_RETRY_SECONDS)

    def _settings(self) -> ImapSettings:
        if self.box is None:
            raise SecretUnreadable(
                "DRUMBEAT_SECRET_KEY is not set on the worker: the IMAP password cannot be read"
            )
        mailbox = self.mailbox
        return ImapSettings(
            host=mailbox["host"],
            port=mailbox["port"],
            security=mailbox["security"],
            username=mailbox["username"],
            password=self.box.open(mailbox["password_sealed"]),
            folder=mailbox["folder"],
        )

    def _stored_position(self) -> MailboxPosition | None:
        if self.mailbox["uidvalidity"] is None:
            return None
        return MailboxPosition(self.mailbox["uidvalidity"], self.mailbox["last_uid"])

    def _handle(
        self, conn: psycopg.Connection, messages: list[FetchedMessage], position: MailboxPosition
    ) -> None:
        """Each message to drumbeat.inbound_email, and the new position, in one transaction. A message the
        database refuses is logged and skipped (savepoint), so that one bad message cannot stop the inbox."""
        today = dt.datetime.now(dt.UTC).date()
        with conn.transaction():
            for message in messages:
                email = parse_inbound_email(message.raw, today=today)
                try:
                    with conn.transaction():
                        outcome = conn.execute(
                            "SELECT drumbeat.inbound_email(%s, %s)",
                            (self.mailbox["workspace_id"], Jsonb(msgspec.to_builtins(email))),
                        ).fetchone()[0]
                except psycopg.DatabaseError as error:
                    outcome = "refused"
                    log.error(
                        "mailbox_message_refused",
                        extra={
                            "sender_id": str(self.mailbox["sender_id"]),
                            "uid": message.uid,
                            "error": str(error).strip(),
                        },
                    )
                log.info(
                    "mailbox_message",
                    extra={
                        "sender_id": str(self.mailbox["sender_id"]),
                        "uid": message.uid,
                        "outcome": outcome,
                    },
                )
            conn.execute(
                "SELECT drumbeat.mailbox_checked(%s, %s, %s, NULL)",
                (self.mailbox["sender_id"], position.uidvalidity, position.last_uid),
            )

    def _failed(self, conn: psycopg.Connection, error: Exception) -> None:
        log.warning(
            "mailbox_failed", extra={"sender_id": str(self.mailbox["sender_id"]), "error": str(error)}
        )
        conn.execute(
            "SELECT drumbeat.mailbox_checked(%s, NULL, NULL, %s)", (self.mailbox["sender_id"], str(error))
        )
