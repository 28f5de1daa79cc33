-- 0021: a worker that logs in with only the drumbeat_worker role (README, "Database roles") could not use
-- procrastinate's job queue: `drumbeat migrate` installs procrastinate's schema as the migrating role and
-- granted nothing on it, so `drumbeat worker` stopped at start. The worker role now gets the queue's
-- tables and sequences here (for databases where procrastinate is already installed) and, from now on,
-- each time the migrator installs or upgrades procrastinate (app/migrate.py, PROCRASTINATE_GRANTS).

DO $$
BEGIN
    IF pg_catalog.to_regnamespace('procrastinate') IS NOT NULL THEN
        GRANT USAGE ON SCHEMA procrastinate TO drumbeat_worker;
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA procrastinate TO drumbeat_worker;
        GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA procrastinate TO drumbeat_worker;
    END IF;
END
$$;
