"""Reconciliation: an `unknown` delivery (the provider's answer was lost: a read timeout, a connection cut
after the request, a 5xx) is settled by asking the provider, where it can be asked, whether it has the
message. Twilio can (its Messages list): the delivery becomes `sent` with the message's SID, or, when
Twilio has no such message, a failed attempt, retried at once (the reconcile delay was its wait). SMTP cannot be asked:
those stay `unknown` (never resent) and their enrollments move on at once (record_deliveries).

The SQL owns every decision (drumbeat.due_reconciliations leases the deliveries whose turn came,
drumbeat.settle_reconciliations settles them, backs off while the provider cannot be asked and gives up
after drumbeat.reconcile_give_up()); this module only asks. Run by the worker's `drumbeat.reconcile`
periodic job (workers/app.py) every few seconds."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from workers.transports import Lookup

# How many unknown deliveries one run asks about: a run is a handful of provider round trips, and a backlog
# (a provider incident) is worked off over successive runs instead of holding a worker slot for minutes.
BATCH = 50


def lookup_for(row: dict[str, Any]) -> Lookup:
    """The provider question for one due delivery (a row of drumbeat.due_reconciliations)."""
    return Lookup(
        to_address=row["to_address"],
        from_address=row["from_address"],
        text=row["body"],
        since=row["started_at"],
    )


def answers(
    due: Iterable[dict[str, Any]], find: Callable[[dict[str, Any]], list[str] | None], run=map
) -> list[dict[str, Any]]:
    """settle_reconciliations' input for `due`: each delivery with the provider's matching message ids (None
    when the provider could not be asked). `find(row)` asks; `run` maps it (a thread pool's map runs the
    round trips side by side)."""
    rows = list(due)
    return [
        {"delivery_id": str(row["delivery_id"]), "candidates": candidates}
        for row, candidates in zip(rows, run(find, rows), strict=True)
    ]
