from tests.sql.factories import new_tenant


def test_schema_is_there(conn):
    assert conn.execute("SELECT count(*) FROM drumbeat.timezones").fetchone()[0] > 300


def test_newcomer_flow(conn):
    tenant = new_tenant(conn)
    contact = tenant.contact(first_name="Ada", timezone="Europe/London")
    sequence = tenant.sequence()
    outcomes = tenant.enroll(sequence, [contact])
    assert [o[2] for o in outcomes] == ["enrolled"]
