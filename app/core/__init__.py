"""The shared core every layer stands on: settings, database access, named queries, SQL files, the
event log and logs. It imports nothing from `app.api`, `app.console`, `app.commands` or `workers`."""
