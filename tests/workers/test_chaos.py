"""Chaos, small (bench/chaos.py; `python -m bench.chaos` runs it at full size): three real `drumbeat
worker` processes send a two-SMS sequence through the Twilio stand-in and its fault mix (429, 500, answers
past the client timeout), one of them SIGKILLed and restarted every 2 s, one worker backend terminated.
Nothing may be sent twice, nothing may be lost, every unknown delivery must be explained by a kill or an
ambiguous answer, and every enrollment must settle.

The run takes two minutes or so, most of it waiting for reconciliation: an unknown SMS is looked up at
the stand-in 30 s after its answer was lost, and one the stand-in does not have is retried then. A second test checks the harness's counting itself on made-up figures: a chaos
test whose tally could not see a duplicate would always pass."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

from bench.chaos import STEP_BODIES, ChaosConfig, Delivery, Observed, run_chaos, tally

SMALL = ChaosConfig(
    contacts=200,
    send_concurrency=4,
    kill_every=2.0,
    chaos_seconds=12.0,
    settle_seconds=300.0,  # a retried step meeting a second 500 waits for a second reconciliation
    late_seconds=12.0,  # past the worker's 10 s client timeout: a read timeout, the message accepted
)


def test_killed_workers_and_a_faulty_provider_never_send_twice_nor_lose_a_message(db_url, tmp_path):
    report = run_chaos(db_url, replace(SMALL, log_dir=tmp_path))
    summary = f"\n{report.table()}\n(worker logs: {tmp_path})"
    print(summary)
    # The chaos did happen: kills met sends in flight, the provider refused and answered ambiguously.
    assert report.kills == 6 and report.sending_at_kills > 0, summary
    assert report.ambiguous_answers > 0 and report.too_many_answers > 0, summary
    # A batch's backend terminated mid-way (in a transaction or a statement of the protocol).
    assert report.terminated.startswith(("idle in transaction", "active")), summary
    assert "NOT TERMINATED" not in report.terminated, summary
    # Never twice: no (To, Body) accepted more than once, and nothing accepted that nobody was due.
    assert report.duplicates == 0 and report.stray == 0, summary
    # Nothing lost: each contact's step was accepted, or is unknown (the price of at-most-once) ...
    assert report.lost == 0 and report.sent_not_accepted == 0, summary
    # ... and Twilio can be asked: every delivery in doubt was settled by reconciliation, none is left
    # unknown, and what it found not sent was retried (the 500s that created nothing).
    assert report.unknown > 0 and report.still_unknown == 0, summary
    assert report.reconciled_sent + report.reconciled_not_sent == report.unknown, summary
    assert report.reconciled_not_sent >= report.server_errors > 0, summary
    # ... and each unknown is explained: 'sending' right after a kill, or answered ambiguously ...
    assert report.unknown_unaccounted == 0, summary
    # ... and a kill costs only the sends in flight (of each batch its victim ran), never whole batches.
    assert report.worst_kill <= report.kill_bound and report.within_bound, summary
    # Everything settled: no enrollment active, no delivery reserved or sending.
    assert report.settle_seconds is not None and report.unsettled == 0 and report.in_flight == 0, summary
    assert report.failed_enrollments == 0, summary
    # No worker died unasked, and each stopped cleanly (exit 0) on SIGTERM.
    assert report.odd_exits == [], summary


def _observed(accepted: list, deliveries: list[Delivery], sending_at_kills: list[set[str]]) -> Observed:
    """Made-up figures for two contacts, A and B, two steps each."""
    return Observed(
        config=SMALL,
        expected={(to, body) for to in ("A", "B") for body in STEP_BODIES},
        accepted=accepted,
        deliveries=deliveries,
        enrollments=Counter({"completed": 2}),
        sending_at_kills=sending_at_kills,
        answers=Counter({"accepted": 4}),
        ambiguous_keys=set(),
        terminated="none",
        settle_seconds=1.0,
    )


def test_the_tally_sees_duplicates_losses_unexplained_unknowns_and_costly_kills():
    one, two = STEP_BODIES
    lease_expired = Delivery("4", ("B", two), "unknown", "lease_expired")
    clean = _observed(
        accepted=[("A", one), ("A", two), ("B", one)],
        deliveries=[
            Delivery("1", ("A", one), "sent", None),
            Delivery("2", ("A", two), "sent", None),
            Delivery("3", ("B", one), "sent", None),
            lease_expired,
        ],
        sending_at_kills=[{"4"}, {"4"}],  # still 'sending' at the second kill: the first one left it
    )
    assert tally(clean).problems() == []
    assert tally(clean).kill_costs == [1, 0]

    twice = tally(replace(clean, accepted=[*clean.accepted, ("A", one)]))
    assert (twice.duplicates, twice.duplicate_messages) == (1, 1) and twice.problems() == ["duplicates: 1"]

    no_kill_saw_it = tally(replace(clean, sending_at_kills=[{"1"}, {"2"}]))
    assert no_kill_saw_it.unknown_unaccounted == 1
    answered = lease_expired._replace(unknown_reason="ambiguous_provider_answer")
    unanswered = replace(clean, deliveries=[*clean.deliveries[:3], answered], sending_at_kills=[])
    assert tally(unanswered).unknown_unaccounted == 1  # the stand-in gave that message no ambiguous answer
    answered_once = replace(unanswered, ambiguous_keys={("B", two)}, answers=Counter({"server_error": 1}))
    assert tally(answered_once).problems() == []
    # No kill and no ambiguous answer counted: no unknown is allowed at all.
    assert tally(replace(answered_once, answers=Counter())).problems() == ["unknown 1 > bound 0"]
    # The bound (one batch's sends per kill) is reported; the one checked allows each kill
    # --concurrency batches' sends in flight.
    many = [Delivery(str(n), ("B", two), "unknown", "lease_expired") for n in range(100, 106)]
    two_batches = tally(
        replace(clean, deliveries=[*clean.deliveries[:3], *many], sending_at_kills=[{d.id for d in many}])
    )
    assert two_batches.one_batch_bound == 4 < two_batches.unknown == 6 <= two_batches.bound == 12
    assert two_batches.problems() == []

    # A kill that left more than its victim's sends in flight (a whole batch 'sending') is seen.
    batch = [Delivery(str(n), ("A", one), "unknown", "lease_expired") for n in range(100, 113)]
    whole_batch = tally(replace(clean, deliveries=batch, sending_at_kills=[{d.id for d in batch}]))
    assert whole_batch.worst_kill == 13 > whole_batch.kill_bound == 12
    assert "a kill cost 13 > 12 (concurrency x send concurrency)" in whole_batch.problems()

    # Reconciliation: a kill's send found at the provider is sent; one it did not have failed, and its
    # retry was accepted. Both were in doubt, neither is lost, and the second never reached the provider.
    found = Delivery("4", ("B", two), "sent", "lease_expired")
    not_there = Delivery("5", ("A", two), "failed", "lease_expired")
    reconciled = tally(
        replace(
            clean,
            accepted=[*clean.accepted, ("B", two)],
            deliveries=[*clean.deliveries[:3], found, not_there],
            sending_at_kills=[{"4", "5"}],
        )
    )
    assert (reconciled.unknown, reconciled.reconciled_sent, reconciled.reconciled_not_sent) == (2, 1, 1)
    assert (reconciled.still_unknown, reconciled.unknown_never_reached, reconciled.lost) == (0, 1, 0)
    assert reconciled.problems() == []

    lost = tally(replace(clean, deliveries=clean.deliveries[:3]))
    assert lost.lost == 1
    lied = tally(replace(clean, accepted=clean.accepted[:2]))
    assert lied.sent_not_accepted == 1
    unsettled = tally(replace(clean, enrollments=Counter({"active": 1, "completed": 1}), settle_seconds=None))
    assert unsettled.problems() == ["unsettled enrollments: 1", "did not settle in time"]
    crashed = tally(replace(clean, odd_exits=["worker-004.log exited unasked: exit 1"]))
    assert crashed.problems() == ["workers that exited unasked or not with 0: 1"]
