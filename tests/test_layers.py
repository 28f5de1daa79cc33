"""The import contract: the layers of docs/ARCHITECTURE.md hold in the code. Every module of app/ and
workers/ is parsed (nothing is imported) and every import it makes is checked, including the ones inside
functions (the CLI imports lazily) and `importlib.import_module("...")` calls with a literal name:

- app/core, the shared core, imports nothing from the layers above it: app.api, app.console, app.commands,
  app.cli or workers;
- workers (the dispatcher) import nothing from the HTTP API, the console or the CLI;
- app/api imports nothing from the CLI or the worker (what both need lives in the core);
- the CLI (app/commands, app/cli.py) is the top layer: it may start the worker and the API, but reaches
  the API only through its app factory, app.api.app, never into its controllers or helpers;
- every module of app/ sits in one of those layers (no new module loose in app/'s root);
- and in tests/, no module imports a test module (test_*.py) or a conftest.py: what several test modules
  share lives in tests/support/ (or another helper module).

A failure names the module, the line and the import that breaks a rule."""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "workers")
# Modules allowed in app/'s root: the package itself and the `drumbeat` entry point.
APP_ROOT_MODULES = {"app", "app.cli"}
LAYER_PACKAGES = ("app.core", "app.api", "app.console", "app.commands")


@dataclass(frozen=True)
class Rule:
    layer: str  # who the rule is about
    members: tuple[str, ...]  # the modules or packages of that layer
    forbidden: tuple[str, ...]  # what they may not import
    allowed: tuple[str, ...] = ()  # exceptions inside `forbidden`
    why: str = ""


RULES = (
    Rule(
        "core",
        ("app.core",),
        ("app.api", "app.console", "app.commands", "app.cli", "workers"),
        why="the shared core imports nothing from the layers above it",
    ),
    Rule(
        "worker",
        ("workers",),
        ("app.api", "app.console", "app.commands", "app.cli"),
        why="the worker imports nothing from the HTTP API, the console or the CLI",
    ),
    Rule(
        "api",
        ("app.api",),
        ("app.commands", "app.cli", "workers"),
        why="the HTTP API imports nothing from the CLI or the worker (shared code lives in app.core)",
    ),
    Rule(
        "cli",
        ("app.commands", "app.cli"),
        ("app.api",),
        allowed=("app.api.app",),
        why="the CLI reaches the HTTP API only through its app factory, app.api.app",
    ),
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    line: int
    # (name, shown) for each thing the statement loads: `import a.b` loads a.b; `from a import b` loads a.b
    # (a submodule or a name of a), shown as `a` when a itself is what breaks a rule
    names: tuple[tuple[str, str], ...]
    text: str  # the statement as written, for the message


def within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _absolute(module: str, is_package: bool, level: int, target: str | None) -> str:
    """The absolute name of a relative import (`from . import x`, `from ..core import y`)."""
    if level == 0:
        return target or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, target] if target else base)


def _literal_prefix(node: ast.expr) -> str | None:
    """The module name passed to import_module/__import__: a string literal, or an f-string's leading
    literal part up to its last dot (f"app.commands.{name}" -> app.commands)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
        head = str(node.values[0].value)
        return head.rsplit(".", 1)[0] if "." in head else None
    return None


def imports_of(module: str, source: str, *, is_package: bool = False) -> list[Import]:
    """Every import `module` makes, wherever it is in the file (top level, functions, TYPE_CHECKING)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = tuple((alias.name, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.level, node.module)
            names = tuple(
                (base if alias.name == "*" else f"{base}.{alias.name}", base) for alias in node.names
            )
        elif (
            isinstance(node, ast.Call)
            and node.args
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in ("import_module", "__import__"))
            )
            and (name := _literal_prefix(node.args[0]))
        ):
            names = ((name, name),)
        else:
            continue
        found.append(Import(module, node.lineno, names, ast.get_source_segment(source, node) or ""))
    return found


def violations(module: str, source: str, *, is_package: bool = False) -> list[str]:
    """What in `source` (the text of `module`) breaks a rule, one line each."""
    problems = []
    for rule in RULES:
        if not any(within(module, member) for member in rule.members):
            continue
        for imported in imports_of(module, source, is_package=is_package):
            for name, shown in imported.names:
                if any(within(name, bad) for bad in rule.forbidden) and not any(
                    within(name, ok) for ok in rule.allowed
                ):
                    culprit = shown if any(within(shown, bad) for bad in rule.forbidden) else name
                    problems.append(
                        f"{module} (line {imported.line}) imports {culprit}: `{imported.text}` "
                        f"({rule.layer} layer: {rule.why})"
                    )
                    break
    return problems


def source_modules() -> list[tuple[str, Path]]:
    modules = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if "sql" not in path.relative_to(ROOT).parts:  # app/sql is the wheel's copy of sql/, no Python
                modules.append((module_name(path), path))
    return modules


def test_the_code_keeps_to_the_layers():
    modules = source_modules()
    assert len(modules) > 30, "the walk found too few modules: is ROOT right?"
    problems = [
        problem
        for name, path in modules
        for problem in violations(name, path.read_text(), is_package=path.name == "__init__.py")
    ]
    assert not problems, "imports that break the layers (docs/ARCHITECTURE.md):\n" + "\n".join(problems)


def test_every_module_of_app_is_in_a_layer():
    loose = [
        name
        for name, _ in source_modules()
        if within(name, "app")
        and name not in APP_ROOT_MODULES
        and not any(within(name, layer) for layer in LAYER_PACKAGES)
    ]
    assert not loose, f"modules of app/ outside app/core, app/api, app/console, app/commands: {loose}"


def is_test_module(name: str) -> bool:
    last = name.rsplit(".", 1)[-1]
    return within(name, "tests") and (last.startswith("test_") or last == "conftest")


def imports_of_test_modules(module: str, source: str) -> list[str]:
    problems = []
    for imported in imports_of(module, source):
        culprits = [shown if is_test_module(shown) else name for name, shown in imported.names]
        if culprit := next((c for c in culprits if is_test_module(c)), None):
            problems.append(
                f"{module} (line {imported.line}) imports {culprit}: `{imported.text.splitlines()[0]}` "
                "(move what it needs to tests/support)"
            )
    return problems


def test_test_modules_never_import_each_other():
    problems = [
        problem
        for path in sorted((ROOT / "tests").rglob("*.py"))
        for problem in imports_of_test_modules(module_name(path), path.read_text())
    ]
    assert not problems, "\n".join(problems)


# The contract must be able to fail: each synthetic module below breaks (or keeps) one rule.
BROKEN = [
    ("app.core.settings", "from app.api.db import act_as", "app.api.db"),
    ("app.core.templates", "def f():\n    import workers.dispatcher\n", "workers.dispatcher"),
    ("app.core.queries", "from app import commands", "app.commands"),
    ("app.core.logs", "from ..commands import CommandError", "app.commands"),
    ("app.core.db", "import importlib\nimportlib.import_module('app.console.pages')", "app.console.pages"),
    ("app.core.errors", "from app.api import *", "app.api"),
    ("workers.dispatcher", "from app.api.validation import clean_contact", "app.api.validation"),
    ("workers.app", "def build():\n    from app.commands import settings_for\n", "app.commands"),
    ("workers.tracking", "from app.cli import main", "app.cli"),
    ("app.api.sequences", "from workers import render", "workers"),
    ("app.api.contacts", "from app.commands.import_contacts import Progress", "app.commands.import_contacts"),
    ("app.commands.import_contacts", "from app.api.csv_import import Importer", "app.api.csv_import"),
    ("app.cli", "importlib.import_module(f'app.api.{name}')", "app.api"),
]
KEPT = [
    ("app.core.templates", "from app.core.errors import Invalid\nimport jinja2"),
    ("app.core.db", "from .errors import domain_error"),
    ("workers.dispatcher", "from app.core import event_log, logs\nfrom workers.transports import Message"),
    ("app.api.webhooks", "from app.core.links import LinkSigner"),
    (
        "app.commands.up",
        "def run():\n    from app.api.app import create_app\n    from workers.app import run_beside\n",
    ),
    ("app.cli", "importlib.import_module(f'app.commands.{name}')"),
    ("app.commands.api", "from app.api import app"),
]


@pytest.mark.parametrize(("module", "source", "culprit"), BROKEN)
def test_a_broken_rule_is_named(module, source, culprit):
    problems = violations(module, source)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{module} (line ") and f"imports {culprit}:" in problems[0], problems


@pytest.mark.parametrize(
    "source",
    [
        "from tests.workers.test_worker_process import run_worker_until_sent",
        "from tests.app.api.conftest import ApiTenant",
        "from tests.app.api import test_webhooks",
        "def f():\n    import tests.app.test_cli_api\n",
    ],
)
def test_an_import_of_a_test_module_is_named(source):
    assert len(imports_of_test_modules("tests.e2e.test_quickstart", source)) == 1


def test_imports_of_helper_modules_pass():
    source = "from tests.support.processes import free_port\nfrom tests.sql.factories import new_tenant"
    assert imports_of_test_modules("tests.e2e.test_quickstart", source) == []


@pytest.mark.parametrize(("module", "source"), KEPT)
def test_allowed_imports_pass(module, source):
    assert violations(module, source) == []
