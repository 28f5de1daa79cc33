from app.core.queries import parse, queries


def test_parse_splits_named_blocks_and_keeps_their_comments():
    text = "-- file header\n\n-- name: first\n-- why\nSELECT 1\n\n-- name: second\nSELECT 2;\n"
    assert parse(text) == {"first": "-- why\nSELECT 1", "second": "SELECT 2;"}


def test_the_dispatch_queries_are_all_there():
    assert set(queries("dispatch")) == {
        "become_worker",
        "claim_due",
        "record_and_start",
        "release_reservations",
        "recover_deliveries",
        "outbox_insert",
        "due_backlog",
        "active_channels",
        "due_reconciliations",
        "settle_reconciliations",
        "held_scopes",
        "hold_deliveries",
        "clear_holds",
    }
