"""The worker's own connections after a Postgres fault (workers/reconnect.py): reconnecting with a capped
backoff, the outbox insert made again on a new connection (it is idempotent) or classified when Postgres
stays out of reach, and a batch's record call made again on a new connection, so that what was sent is
recorded sent instead of becoming unknown at its lease."""

from __future__ import annotations

import threading
import time
import uuid

import psycopg
import pytest

from tests.log_capture import captured_logs
from tests.sql.factories import SMS_SEQUENCE, new_tenant
from tests.support.cluster import ThrowawayCluster, binaries
from tests.support.processes import free_port
from workers import reconnect
from workers.dispatcher import Dispatcher
from workers.transports import Message, OutboxTransport

NOW = "2026-11-23 14:00Z"  # Monday 09:00 in New York
BINARIES = binaries()
needs_binaries = pytest.mark.skipif(
    BINARIES is None,
    reason="no PostgreSQL server binaries (initdb, pg_ctl) found to run a cluster of our own",
)


@pytest.fixture
def own_cluster():
    cluster = ThrowawayCluster(BINARIES).init()
    yield cluster
    cluster.destroy()


def _message() -> Message:
    return Message(
        delivery_id=str(uuid.uuid4()),
        workspace_id=str(uuid.uuid4()),
        idempotency_key="k",
        channel="sms",
        to_address="+15550001001",
        from_address="+15550000001",
        text="Hi",
    )


def _nowhere() -> str:
    return f"host=127.0.0.1 port={free_port()} user=postgres dbname=postgres"


def _terminate(db_url: str, conn: psycopg.Connection) -> None:
    """pg_terminate_backend `conn`'s backend and wait until it is gone."""
    with psycopg.connect(db_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))


def _setup(db_url: str, contacts: int = 2) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
        tenant = new_tenant(conn)
        tenant.enroll(
            tenant.sequence(SMS_SEQUENCE),
            tenant.contacts(*[{"phone": f"+1555000100{i}"} for i in range(contacts)]),
        )
        conn.commit()


def _connect_at_now(db_url: str) -> psycopg.Connection:
    conn = psycopg.connect(db_url, autocommit=True)
    conn.execute("SELECT set_config('drumbeat.clock', %s, false)", (NOW,))
    return conn


def _rows(db_url: str, query: str) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query).fetchall()


def test_reconnecting_backs_off_and_gives_up_after_its_budget():
    with captured_logs() as logs:
        started = time.monotonic()
        with pytest.raises(psycopg.OperationalError):
            reconnect.connect(_nowhere(), budget=1.0)
        took = time.monotonic() - started
    attempts = logs.named("database_unavailable")
    # 0.25 + 0.5 s of waiting fit in the budget, the next 1 s does not: three attempts, not a spin.
    assert [line.get("retry_in_s") for line in attempts] == [0.25, 0.5, None]
    assert 0.7 < took < 1.5
    assert list(zip(range(6), reconnect.delays(), strict=False)) == [
        (0, 0.25),
        (1, 0.5),
        (2, 1.0),
        (3, 2.0),
        (4, 2.0),
        (5, 2.0),
    ]


def test_reconnecting_stops_waiting_when_the_worker_stops():
    stopping = threading.Event()
    threading.Timer(0.3, stopping.set).start()
    started = time.monotonic()
    with pytest.raises(psycopg.OperationalError):
        reconnect.connect(_nowhere(), budget=30, stopping=stopping)
    assert time.monotonic() - started < 2


@needs_binaries
def test_reconnecting_succeeds_once_postgres_answers(own_cluster):
    threading.Timer(1.0, own_cluster.start).start()
    with captured_logs() as logs:
        conn = reconnect.connect(own_cluster.url(), budget=30)
    conn.close()
    assert logs.named("database_unavailable")
    assert logs.named("database_reconnected")


def test_an_unreachable_outbox_is_a_transient_failure():
    """No insert reached Postgres: certainly not recorded, so it is retried later."""
    result = OutboxTransport(_nowhere(), retry_seconds=0.3).send(_message())
    assert not result.sent and result.transient and not result.ambiguous
    assert result.error_code == "outbox_unreachable"


@needs_binaries
def test_an_outbox_insert_cut_off_by_postgres_going_away_is_ambiguous(own_cluster):
    """An insert was sent on a connection that then died: it may have committed, so it is never resent."""
    own_cluster.start()
    outbox = OutboxTransport(own_cluster.migrated_database(), retry_seconds=0.5)
    outbox._connection()
    own_cluster.stop()
    result = outbox.send(_message())
    assert not result.sent and result.ambiguous and not result.transient


class _Terminating:
    """The outbox, with Postgres terminating a connection (the outbox's or the batch's) before each of the
    first `times` sends."""

    name = "outbox"
    concurrent = False

    def __init__(self, db_url: str, outbox: OutboxTransport, victim, times: int = 1):
        self.db_url, self.outbox, self.victim, self.times = db_url, outbox, victim, times

    def send(self, message: Message):
        if self.times:
            self.times -= 1
            _terminate(self.db_url, self.victim())
        return self.outbox.send(message)


def test_the_outbox_inserts_again_on_a_new_connection_when_its_own_is_terminated(db_url):
    _setup(db_url)
    outbox = OutboxTransport(db_url)
    transport = _Terminating(db_url, outbox, victim=outbox._connection, times=2)
    dispatcher = Dispatcher(_connect_at_now(db_url), {"sms": transport, "email": transport})
    assert dispatcher.run_once() == 2
    assert _rows(db_url, "SELECT status, count(*) FROM drumbeat.deliveries GROUP BY 1") == [("sent", 2)]
    assert _rows(db_url, "SELECT count(*) FROM drumbeat.outbox") == [(2,)]
    outbox.close()


def test_a_record_call_that_lost_its_connection_is_made_again_on_a_new_one(db_url, caplog):
    """Postgres drops the batch's connection while its messages are being sent: the record call fails on
    it, is made once more on a new connection (logged), and the messages are recorded sent (not left
    'sending' to become unknown at their lease), each sent once."""
    _setup(db_url)
    outbox = OutboxTransport(db_url)
    dispatcher = Dispatcher(
        _connect_at_now(db_url), {}, reconnect=lambda: _connect_at_now(db_url), batch_size=10
    )
    first = dispatcher.conn
    transport = _Terminating(db_url, outbox, victim=lambda: dispatcher.conn)
    dispatcher.transports.update(sms=transport, email=transport)
    with caplog.at_level("WARNING", logger="drumbeat.dispatch"):
        assert dispatcher.run_once() == 2
    assert [r.purpose for r in caplog.records if r.getMessage() == "database_connection_lost"] == ["record"]
    assert dispatcher.conn is not first and first.closed
    assert _rows(db_url, "SELECT status, count(*) FROM drumbeat.deliveries GROUP BY 1") == [("sent", 2)]
    assert _rows(db_url, "SELECT count(*) FROM drumbeat.outbox") == [(2,)]
    outbox.close()


def test_without_a_way_to_reconnect_a_failed_record_leaves_the_sends_to_their_lease(db_url):
    _setup(db_url)
    outbox = OutboxTransport(db_url)
    dispatcher = Dispatcher(_connect_at_now(db_url), {}, batch_size=10)
    transport = _Terminating(db_url, outbox, victim=lambda: dispatcher.conn)
    dispatcher.transports.update(sms=transport, email=transport)
    with pytest.raises(psycopg.OperationalError):
        dispatcher.run_once()
    assert _rows(db_url, "SELECT status, count(*) FROM drumbeat.deliveries GROUP BY 1") == [("sending", 2)]
    assert _rows(db_url, "SELECT count(*) FROM drumbeat.outbox") == [(2,)]
    outbox.close()
