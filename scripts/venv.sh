# Sourced by scripts/run and scripts/test: create the virtualenv ($DRUMBEAT_VENV, default .venv) when
# missing and (re)install Drumbeat with its dev extra when pyproject.toml is newer than the last install.
# One environment for both, so the run command and the test command never install twice.
VENV="${DRUMBEAT_VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ ! -f "$VENV/.drumbeat-installed" ] || [ pyproject.toml -nt "$VENV/.drumbeat-installed" ]; then
    echo "Installing Drumbeat into $VENV (first run only)..." >&2
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet -e '.[dev]'
    touch "$VENV/.drumbeat-installed"
fi
