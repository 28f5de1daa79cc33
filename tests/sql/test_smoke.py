def test_schema_is_there(conn):
    assert conn.execute("SELECT count(*) FROM drumbeat.timezones").fetchone()[0] > 300
