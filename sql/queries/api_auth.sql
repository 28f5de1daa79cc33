-- Statements of the API's authentication and per-request identity (app/api/auth.py, app/api/db.py).

-- name: authenticate_api_key
-- The key's id (its workspace membership's user id), or NULL when the token is unknown or revoked.
SELECT drumbeat.authenticate_api_key(%s) AS key_id

-- name: act_as
-- For this transaction only, what PostgREST does: the caller's JWT claims, then the role `authenticated`.
SELECT set_config('request.jwt.claims', %s, true), set_config('role', 'authenticated', true)
