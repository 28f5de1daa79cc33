"""Least privilege inside a workspace, as a Supabase client reaches the database (SET LOCAL ROLE
authenticated + request.jwt.claims): the escalation probes of issue 15, each refused with nothing
changed; the role rules of membership management; re-subscribing only by an admin, on the record; a
number or from-address belongs to one workspace."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.sql.factories import Tenant, new_tenant
from tests.support import act_as, act_as_owner, call, sql_error


@pytest.fixture
def acme(conn) -> Tenant:
    return new_tenant(conn, "Acme")


def join(tenant: Tenant, role: str) -> uuid.UUID:
    """A new person in the tenant's workspace with `role`, added by its owner through the contract."""
    user = uuid.uuid4()
    tenant.as_owner()
    call(tenant.conn, "add_member", tenant.workspace_id, user, role)
    return user


def roles(tenant: Tenant) -> dict[uuid.UUID, str]:
    act_as_owner(tenant.conn)
    rows = tenant.conn.execute(
        "SELECT user_id, role FROM drumbeat.workspace_members WHERE workspace_id = %s", (tenant.workspace_id,)
    )
    return dict(rows.fetchall())


def member_events(tenant: Tenant) -> list[tuple]:
    act_as_owner(tenant.conn)
    return tenant.conn.execute(
        "SELECT kind, actor_id, payload FROM drumbeat.events WHERE workspace_id = %s AND kind LIKE 'member_%%' "
        "ORDER BY id",
        (tenant.workspace_id,),
    ).fetchall()


def opted_out(conn: psycopg.Connection, contact_id: uuid.UUID) -> tuple:
    act_as_owner(conn)
    return conn.execute(
        "SELECT sms_opted_out_at IS NOT NULL, email_opted_out_at IS NOT NULL FROM drumbeat.contacts WHERE id = %s",
        (contact_id,),
    ).fetchone()


# --- the probes: plain SQL, which used to succeed --------------------------------------------------


def test_an_admin_cannot_promote_itself_or_demote_the_owner_with_sql(acme):
    admin = join(acme, "admin")
    before = roles(acme)
    for statement, params in [
        ("UPDATE drumbeat.workspace_members SET role = 'owner' WHERE user_id = %s", (admin,)),
        ("UPDATE drumbeat.workspace_members SET role = 'member' WHERE user_id = %s", (acme.owner,)),
        ("DELETE FROM drumbeat.workspace_members WHERE user_id = %s", (acme.owner,)),
        (
            "INSERT INTO drumbeat.workspace_members (workspace_id, user_id, role) VALUES (%s, %s, 'owner')",
            (acme.workspace_id, uuid.uuid4()),
        ),
    ]:
        act_as(acme.conn, admin)
        with sql_error(acme.conn, "42501", match="permission denied for table workspace_members"):
            acme.conn.execute(statement, params)
    assert roles(acme) == before


def test_an_admin_cannot_mint_an_owner_key(acme):
    admin = join(acme, "admin")
    act_as(acme.conn, admin)
    with sql_error(acme.conn, "42501", match="permission denied for function issue_api_key"):
        acme.conn.execute(
            "SELECT * FROM drumbeat.issue_api_key(%s, 'mine', 'owner', %s)", (acme.workspace_id, admin)
        )
    with sql_error(acme.conn, "PT403", field="role", match="admin cannot create a key with the owner role"):
        call(acme.conn, "create_api_key", acme.workspace_id, "mine", "owner")
    assert set(roles(acme).values()) == {"owner", "admin"}


def test_a_member_cannot_clear_an_opt_out_with_sql(acme):
    member = join(acme, "member")
    contact = acme.contact()
    call(acme.conn, "record_event", contact, "unsubscribed", Jsonb({"channel": "all"}))
    act_as(acme.conn, member)
    with sql_error(acme.conn, "42501", match="permission denied for table contacts"):
        acme.conn.execute(
            "UPDATE drumbeat.contacts SET sms_opted_out_at = NULL, email_opted_out_at = NULL WHERE id = %s",
            (contact,),
        )
    with sql_error(acme.conn, "PT422", field="p_changes.sms_opted_out_at"):  # nor through update_contact
        call(acme.conn, "update_contact", contact, Jsonb({"sms_opted_out_at": None}))
    assert opted_out(acme.conn, contact) == (True, True)


def test_a_member_cannot_forge_a_reply(acme):
    member = join(acme, "member")
    contact = acme.contact()
    [(_, enrollment_id, _)] = acme.enroll(acme.sequence(), [contact])
    act_as(acme.conn, member)
    with sql_error(acme.conn, "42501", match="permission denied for table events"):
        acme.conn.execute(
            "INSERT INTO drumbeat.events (workspace_id, kind, contact_id, enrollment_id) VALUES (%s, 'replied', %s, %s)",
            (acme.workspace_id, contact, enrollment_id),
        )
    act_as_owner(acme.conn)
    status = acme.conn.execute("SELECT status FROM drumbeat.enrollments WHERE id = %s", (enrollment_id,))
    assert status.fetchone() == ("active",)
    replies = acme.conn.execute("SELECT count(*) FROM drumbeat.events WHERE kind = 'replied'")
    assert replies.fetchone() == (0,)


def test_a_member_cannot_delete_sequences_and_their_history(acme):
    member = join(acme, "member")
    sequence = acme.sequence()
    acme.enroll(sequence, [acme.contact()])
    act_as(acme.conn, member)
    for table in ("sequences", "sequence_steps", "enrollments", "contacts", "events"):
        with sql_error(acme.conn, "42501", match=f"permission denied for table {table}"):
            acme.conn.execute(f"DELETE FROM drumbeat.{table} WHERE workspace_id = %s", (acme.workspace_id,))
    act_as_owner(acme.conn)
    assert acme.conn.execute(
        "SELECT count(*) FROM drumbeat.sequences WHERE id = %s", (sequence,)
    ).fetchone() == (1,)


@pytest.mark.parametrize(
    ("channel", "taken", "again"),
    [
        ("sms", "+15550004444", "+15550004444"),
        ("email", "sales@acme.example", "Sales@ACME.example"),
    ],
)
def test_another_workspace_cannot_claim_a_number_or_address(conn, acme, channel, taken, again):
    acme.sender(channel, taken)
    rival = new_tenant(conn, "Rival", with_sender=False)
    rival.as_owner()
    with sql_error(conn, "PT409", field="p_address", match="already used by another workspace"):
        call(conn, "create_sender", rival.workspace_id, channel, again, Jsonb({}))
    act_as_owner(conn)
    owners = conn.execute("SELECT workspace_id FROM drumbeat.senders WHERE address = %s", (taken,)).fetchall()
    assert owners == [(acme.workspace_id,)]


def test_the_operator_shares_a_number_and_tenants_cannot(conn, acme):
    acme.sender("sms", "+15550004444")
    agency = new_tenant(conn, "Agency brand", with_sender=False)
    agency.as_owner()
    with sql_error(conn, "42501", match="permission denied for function share_sender"):
        conn.execute("SELECT drumbeat.share_sender(%s, '+15550004444')", (agency.workspace_id,))
    act_as_owner(conn)  # the operator: `drumbeat senders share`
    shared = conn.execute(
        "SELECT drumbeat.share_sender(%s, '+15550004444')", (agency.workspace_id,)
    ).fetchone()[0]
    again = conn.execute(
        "SELECT drumbeat.share_sender(%s, '+15550004444')", (agency.workspace_id,)
    ).fetchone()[0]
    assert shared == again
    row = conn.execute(
        "SELECT workspace_id, shared FROM drumbeat.senders WHERE id = %s", (shared,)
    ).fetchone()
    assert row == (agency.workspace_id, True)
    with sql_error(conn, "PT404", field="address", match="no workspace uses"):
        conn.execute("SELECT drumbeat.share_sender(%s, '+15550005555')", (agency.workspace_id,))
    with sql_error(conn, "PT409", field="workspace_id", match="owns"):
        conn.execute("SELECT drumbeat.share_sender(%s, '+15550004444')", (acme.workspace_id,))


# --- membership management -----------------------------------------------------------------------


def test_owners_and_admins_add_members_within_their_rank(acme):
    admin = join(acme, "admin")
    newcomer, colleague, boss = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    act_as(acme.conn, admin)
    call(acme.conn, "add_member", acme.workspace_id, newcomer, "member")
    call(acme.conn, "add_member", acme.workspace_id, colleague, "admin")
    with sql_error(acme.conn, "PT403", field="p_role", match="only an owner"):
        call(acme.conn, "add_member", acme.workspace_id, boss, "owner")
    with sql_error(acme.conn, "PT409", field="p_user_id", match="already a member"):
        call(acme.conn, "add_member", acme.workspace_id, newcomer, "admin")
    with sql_error(acme.conn, "PT422", field="p_role", match="owner, admin or member"):
        call(acme.conn, "add_member", acme.workspace_id, boss, "superuser")
    acme.as_owner()
    call(acme.conn, "add_member", acme.workspace_id, boss, "owner")
    assert roles(acme) == {
        acme.owner: "owner",
        admin: "admin",
        newcomer: "member",
        colleague: "admin",
        boss: "owner",
    }
    added = [
        (kind, actor, payload["user_id"], payload["role"]) for kind, actor, payload in member_events(acme)
    ]
    assert added[-3:] == [
        ("member_added", admin, str(newcomer), "member"),
        ("member_added", admin, str(colleague), "admin"),
        ("member_added", acme.owner, str(boss), "owner"),
    ]


def test_a_member_manages_nobody(acme):
    member, other = join(acme, "member"), join(acme, "member")
    before = roles(acme)
    act_as(acme.conn, member)
    for function, args in [
        ("add_member", (acme.workspace_id, uuid.uuid4(), "member")),
        ("update_member_role", (acme.workspace_id, member, "admin")),
        ("remove_member", (acme.workspace_id, other)),
    ]:
        with sql_error(acme.conn, "PT403", match="needs the admin role"):
            call(acme.conn, function, *args)
    assert roles(acme) == before


def test_an_admin_cannot_promote_itself_or_touch_an_owner(acme):
    admin = join(acme, "admin")
    before = roles(acme)
    act_as(acme.conn, admin)
    with sql_error(acme.conn, "PT403", field="p_role", match="only an owner"):
        call(acme.conn, "update_member_role", acme.workspace_id, admin, "owner")
    with sql_error(acme.conn, "PT403", field="p_role", match="only an owner"):
        call(acme.conn, "update_member_role", acme.workspace_id, acme.owner, "member")
    with sql_error(acme.conn, "PT403", field="p_user_id", match="only an owner"):
        call(acme.conn, "remove_member", acme.workspace_id, acme.owner)
    assert roles(acme) == before


def test_the_last_owner_can_be_neither_demoted_nor_removed(acme):
    acme.as_owner()
    with sql_error(acme.conn, "PT409", field="p_user_id", match="last owner cannot be demoted"):
        call(acme.conn, "update_member_role", acme.workspace_id, acme.owner, "admin")
    with sql_error(acme.conn, "PT409", field="p_user_id", match="last owner cannot leave"):
        call(acme.conn, "remove_member", acme.workspace_id, acme.owner)
    successor = join(acme, "owner")
    acme.as_owner()
    call(acme.conn, "update_member_role", acme.workspace_id, acme.owner, "admin")
    act_as(acme.conn, successor)
    call(acme.conn, "remove_member", acme.workspace_id, acme.owner)
    assert roles(acme) == {successor: "owner"}
    changes = [(kind, actor, payload) for kind, actor, payload in member_events(acme)][-2:]
    assert changes == [
        ("member_role_changed", acme.owner, {"user_id": str(acme.owner), "from": "owner", "to": "admin"}),
        ("member_removed", successor, {"user_id": str(acme.owner), "role": "admin"}),
    ]


def test_anyone_may_leave_and_admins_remove_members(acme):
    leaver, removed, admin = join(acme, "member"), join(acme, "member"), join(acme, "admin")
    act_as(acme.conn, leaver)
    call(acme.conn, "remove_member", acme.workspace_id, leaver)
    act_as(acme.conn, admin)
    call(acme.conn, "remove_member", acme.workspace_id, removed)
    with sql_error(acme.conn, "PT404", field="p_user_id", match="member not found"):
        call(acme.conn, "remove_member", acme.workspace_id, removed)
    assert roles(acme) == {acme.owner: "owner", admin: "admin"}


def test_api_keys_are_managed_as_keys(acme):
    acme.as_owner()
    [(key_id, _)] = call(acme.conn, "create_api_key", acme.workspace_id, "ci", "member")
    for function, args in [
        ("update_member_role", (acme.workspace_id, key_id, "owner")),
        ("remove_member", (acme.workspace_id, key_id)),
    ]:
        with sql_error(acme.conn, "PT422", field="p_user_id", match="is an API key"):
            call(acme.conn, function, *args)
    assert roles(acme)[key_id] == "member"


def test_another_tenant_cannot_manage_members(conn, acme):
    rival = new_tenant(conn, "Rival")
    before = roles(acme)
    rival.as_owner()
    for function, args in [
        ("add_member", (acme.workspace_id, rival.owner, "owner")),
        ("update_member_role", (acme.workspace_id, acme.owner, "member")),
        ("remove_member", (acme.workspace_id, acme.owner)),
        ("delete_workspace", (acme.workspace_id,)),
    ]:
        with sql_error(conn, "PT404", match="workspace not found"):
            call(conn, function, *args)
    assert roles(acme) == before


def test_only_an_owner_deletes_the_workspace_with_everything_in_it(acme):
    admin = join(acme, "admin")
    acme.enroll(acme.sequence(), [acme.contact()])
    act_as(acme.conn, admin)
    with sql_error(acme.conn, "PT403", match="needs the owner role"):
        call(acme.conn, "delete_workspace", acme.workspace_id)
    acme.as_owner()
    call(acme.conn, "delete_workspace", acme.workspace_id)
    act_as_owner(acme.conn)
    left = acme.conn.execute(
        "SELECT (SELECT count(*) FROM drumbeat.workspaces WHERE id = %(w)s) + "
        "(SELECT count(*) FROM drumbeat.contacts WHERE workspace_id = %(w)s) + "
        "(SELECT count(*) FROM drumbeat.enrollments WHERE workspace_id = %(w)s) + "
        "(SELECT count(*) FROM drumbeat.events WHERE workspace_id = %(w)s)",
        {"w": acme.workspace_id},
    )
    assert left.fetchone() == (0,)


# --- re-subscribing ---------------------------------------------------------------------------------


def test_only_an_admin_resubscribes_and_it_is_on_the_record(acme):
    member, admin = join(acme, "member"), join(acme, "admin")
    contact = acme.contact(email="ada@example.com")
    call(acme.conn, "record_event", contact, "unsubscribed", Jsonb({"channel": "all"}))
    act_as(acme.conn, member)
    with sql_error(acme.conn, "PT403", match="needs the admin role"):
        call(acme.conn, "resubscribe_contact", contact, "sms", "asked")
    act_as(acme.conn, admin)
    for channel, reason, field in [
        ("fax", "asked", "p_channel"),
        ("sms", "  ", "p_reason"),
        ("sms", None, "p_reason"),
    ]:
        with sql_error(acme.conn, "PT422", field=field):
            call(acme.conn, "resubscribe_contact", contact, channel, reason)
    call(acme.conn, "resubscribe_contact", contact, "sms", "Asked by phone on Dec 1")
    assert opted_out(acme.conn, contact) == (False, True)
    act_as(acme.conn, admin)
    with sql_error(acme.conn, "PT409", field="p_channel", match="not opted out of sms"):
        call(acme.conn, "resubscribe_contact", contact, "sms", "again")
    act_as_owner(acme.conn)
    [(actor, payload)] = acme.conn.execute(
        "SELECT actor_id, payload FROM drumbeat.events WHERE kind = 'resubscribed' AND contact_id = %s",
        (contact,),
    ).fetchall()
    assert actor == admin
    assert payload["channel"] == "sms" and payload["reason"] == "Asked by phone on Dec 1"
    assert "sms_opted_out_at" in payload and "email_opted_out_at" not in payload


def test_another_tenant_cannot_resubscribe(conn, acme):
    contact = acme.contact()
    call(conn, "record_event", contact, "unsubscribed", Jsonb({"channel": "sms"}))
    rival = new_tenant(conn, "Rival")
    rival.as_owner()
    with sql_error(conn, "PT404", field="p_contact_id"):
        call(conn, "resubscribe_contact", contact, "sms", "mine now")
    assert opted_out(conn, contact) == (True, False)


def test_a_temporary_type_cannot_hijack_the_contract(acme):
    """With search_path = '' a function still looks up relations and types in the caller's temporary schema
    first: a tenant's pg_temp.uuid (a domain whose check runs its own code) would run as the functions'
    owner. Every function lists pg_temp last instead (search_path = pg_catalog, pg_temp)."""
    member = join(acme, "member")
    act_as(acme.conn, member)
    acme.conn.execute(
        f"""CREATE FUNCTION pg_temp.evil(text) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN
                IF current_user IN ('drumbeat_contract', 'drumbeat_definer') THEN
                    UPDATE drumbeat.workspace_members SET role = 'owner' WHERE user_id = '{member}';
                    RAISE EXCEPTION 'hijacked as %', current_user;
                END IF;
                RETURN true;
            END $$"""
    )
    acme.conn.execute("CREATE DOMAIN pg_temp.uuid AS text CHECK (pg_temp.evil(VALUE))")
    call(acme.conn, "list_events", acme.workspace_id, None, None, 10)
    call(acme.conn, "sequence_stats", acme.sequence())
    acme.conn.execute("SELECT count(*) FROM drumbeat.contacts")  # the read policies' look-up (definer)
    assert roles(acme)[member] == "member"


def test_an_opt_out_stays_with_its_number_and_address(acme):
    """Moving an opted-out contact off its number (or email) would let a new contact take it, subscribed."""
    contact = acme.contact(phone="+12125550199", email="opt@acme.example")
    call(acme.conn, "record_event", contact, "unsubscribed", Jsonb({"channel": "all"}))
    for changes, field in [
        ({"phone": "+12125550198"}, "p_changes.phone"),
        ({"email": None}, "p_changes.email"),
    ]:
        with sql_error(acme.conn, "PT409", field=field, match="opted out"):
            call(acme.conn, "update_contact", contact, Jsonb(changes))
    [(matched, created)] = call(
        acme.conn,
        "upsert_contacts",
        acme.workspace_id,
        Jsonb([{"email": "opt@acme.example", "phone": "+12125550197"}]),
    )
    assert (matched, created) == (contact, False)
    [(again, created)] = call(
        acme.conn, "upsert_contacts", acme.workspace_id, Jsonb([{"phone": "+12125550199"}])
    )
    assert (again, created) == (contact, False)
    sequence = acme.sequence()
    assert [row[2] for row in acme.enroll(sequence, [again])] == ["opted_out"]


def test_a_demoted_or_removed_member_s_keys_go_with_their_rank(acme):
    """A key never outranks its maker: demoted, their keys above the new role are revoked; gone, all."""
    admin = join(acme, "admin")
    act_as(acme.conn, admin)
    [(admin_key, _)] = call(acme.conn, "create_api_key", acme.workspace_id, "backdoor", "admin")
    [(member_key, _)] = call(acme.conn, "create_api_key", acme.workspace_id, "ci", "member")
    acme.as_owner()
    call(acme.conn, "update_member_role", acme.workspace_id, admin, "member")
    assert admin_key not in roles(acme) and member_key in roles(acme)
    acme.as_owner()
    call(acme.conn, "remove_member", acme.workspace_id, admin)
    assert member_key not in roles(acme)
    act_as(acme.conn, admin_key)  # as the HTTP API acts for a key
    with sql_error(acme.conn, "PT404", match="workspace not found"):
        call(acme.conn, "add_member", acme.workspace_id, admin, "admin")
