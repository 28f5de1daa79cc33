-- 0022: every event on one clock. Dispatch wrote its events at drumbeat.clock_now(), while replies,
-- engagement, completed tasks and the state-machine trigger took the column default, now(). With the SQL
-- clock set (tests, `drumbeat demo`) a condition such as "replied within 2 days" then compared a real-time
-- reply with a clock-time send. In production the clock is unset and clock_now() is now(): no change.
ALTER TABLE drumbeat.events ALTER COLUMN occurred_at SET DEFAULT drumbeat.clock_now();
