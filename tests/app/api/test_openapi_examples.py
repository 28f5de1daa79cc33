"""Every operation of the OpenAPI document is shown by example (issue 20, item 8): each has a summary of its
own, each request body at least one example, each JSON success response one. And the examples are true:
every request example, sent as written to the real app with the ids it uses (app/api/examples.py) standing
for objects made for it, is accepted (2xx), and every response example is exactly what its handler's return
type encodes (no member missing, none extra, each of its type)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from functools import cached_property
from typing import Any

import msgspec
import pytest
from litestar.openapi.datastructures import ResponseSpec

from app.api import examples as ex
from app.api.app import create_app
from app.api.sequences import EXAMPLE_DEFINITION
from app.core.settings import Settings
from scripts.openapi import document
from tests.support.api import ApiTenant, dispatch
from tests.support.webhook_receiver import FakeDns

SPEC = document()  # as served, built from the routes alone
APP = create_app(Settings(database_url="postgresql://unused"))  # its handlers (the pool is never opened)
METHODS = ("get", "put", "post", "delete", "patch")
WEBHOOK_HOST = "crm.example.com"  # the examples' webhook endpoint: resolves to a public address here


def operations() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in SPEC["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    ]


def handlers() -> list[tuple[str, Any]]:
    return [
        (route.path, handler)
        for route in APP.routes
        for handler in getattr(route, "route_handlers", [])
        if handler.resolve_include_in_schema()
    ]


def examples_of(media: dict[str, Any]) -> list[Any]:
    """A media type's examples wherever the document has them: `example`, `examples` (by name), or its
    schema's `examples` (where Litestar puts a body's)."""
    own = [media["example"]] if "example" in media else []
    named = [example["value"] for example in media.get("examples", {}).values()]
    return own + named + media.get("schema", {}).get("examples", [])


def success(operation: dict[str, Any]) -> dict[str, Any]:
    return operation["responses"][min(code for code in operation["responses"] if code.startswith("2"))]


REQUEST_EXAMPLES = [
    pytest.param(method, path, media_type, example, id=f"{method} {path} {media_type} {n}")
    for method, path, operation in operations()
    for media_type, media in operation.get("requestBody", {}).get("content", {}).items()
    for n, example in enumerate(examples_of(media), 1)
]


def test_every_operation_has_a_summary_of_its_own():
    """Litestar makes one up from the function's name ("Healthz") for a handler that gives none."""
    assert len(handlers()) >= len(operations()) > 80
    missing = [
        f"{sorted(handler.http_methods)} {path}" for path, handler in handlers() if not handler.summary
    ]
    assert not missing, missing
    assert all(operation.get("summary") for _, _, operation in operations())


def test_every_request_body_has_an_example():
    bodies = [(method, path, op["requestBody"]) for method, path, op in operations() if "requestBody" in op]
    assert len(bodies) >= 30
    missing = [
        f"{method} {path}"
        for method, path, body in bodies
        if not any(examples_of(media) for media in body["content"].values())
    ]
    assert not missing, missing


def test_every_json_success_response_has_an_example():
    """Each answer that is a JSON document. Litestar says application/json for the tracking pixel and
    redirect, the unsubscribe pages and Twilio's TwiML answer too, with no schema or a bare string: those
    are left out."""
    documents = [
        (method, path, media)
        for method, path, operation in operations()
        if (media := success(operation).get("content", {}).get("application/json"))
        and media["schema"] not in ({}, {"type": "string"})
    ]
    assert len(documents) >= 70
    missing = [f"{method} {path}" for method, path, media in documents if not examples_of(media)]
    assert not missing, missing


def test_every_response_example_is_what_its_type_encodes():
    checked = 0
    for path, handler in handlers():
        for spec in (handler.responses or {}).values():
            for example in spec.examples if isinstance(spec, ResponseSpec) and spec.examples else []:
                value = msgspec.to_builtins(example.value)  # (its nulls are Enum members: see deps.Null)
                decoded = msgspec.convert(value, spec.data_container)
                assert msgspec.to_builtins(decoded) == value, (path, sorted(handler.http_methods))
                checked += 1
    assert checked >= 70


# ---------------------------------------------------------------------------------------------- requests


class World:
    """What an example's path and ids name, made through the API the first time one is needed: the
    examples' sequence (active, its three steps), contacts, an enrollment, a pending call task, a member,
    a webhook endpoint, senders."""

    def __init__(self, tenant: ApiTenant, db_url: str):
        self.tenant = tenant
        self.db_url = db_url
        self.member_added = True

    def made(self, path: str, body: Any = None) -> dict[str, Any]:
        response = self.tenant.post(path, body)
        assert response.status_code in (200, 201), response.text
        return response.json()

    @cached_property
    def sms_sender(self) -> str:
        return self.tenant.sender("sms")

    @cached_property
    def email_sender(self) -> str:
        return self.tenant.sender("email")

    @cached_property
    def sequence(self) -> dict[str, Any]:
        assert self.sms_sender  # activating needs a sender of the sequence's channel
        created = self.made("/sequences", EXAMPLE_DEFINITION)
        self.made(f"/sequences/{created['id']}/activate", {})
        return created

    def step(self, index: int) -> str:
        return self.sequence["steps"][index]["id"]

    def contact_named(self, first_name: str, phone: str) -> str:
        contact = {"first_name": first_name, "phone": phone, "email": f"{first_name.lower()}@example.com"}
        return self.made("/contacts", contact)["id"]

    @cached_property
    def contact(self) -> str:
        return self.contact_named("Ada", "+12125550100")

    @cached_property
    def other_contact(self) -> str:
        return self.contact_named("Grace", "+12125550101")

    def enroll(self, contact_id: str, **options: Any) -> str:
        body = {"sequence_id": self.sequence["id"], "contact_id": contact_id} | options
        return self.made("/enrollments", body)["id"]

    @cached_property
    def enrollment(self) -> str:
        """At the first step, two later ones to skip to."""
        return self.enroll(self.contact_named("Charles", "+12125550102"))

    @cached_property
    def task(self) -> str:
        """Pending: its enrollment started at the call step, which the dispatcher then ran."""
        enrollment_id = self.enroll(self.contact_named("Dorothy", "+12125550103"), start_at_step=3)
        dispatch(self.db_url)
        tasks = self.tenant.get("/tasks").json()["items"]
        return next(task["id"] for task in tasks if task["enrollment_id"] == enrollment_id)

    @cached_property
    def member(self) -> str:
        user_id = str(uuid.uuid4())
        if self.member_added:
            self.made("/members", {"user_id": user_id, "role": "member"})
        return user_id

    @cached_property
    def endpoint(self) -> str:
        return self.made("/webhook-endpoints", {"url": f"https://{WEBHOOK_HOST}/drumbeat"})["id"]

    # What an example needs beyond its objects (PREPARE).

    def new_user(self) -> None:
        """USER_ID then stands for someone who is not a member yet."""
        self.member_added = False

    def opt_out(self) -> None:
        self.made(
            "/events", {"contact_id": self.contact, "kind": "unsubscribed", "payload": {"channel": "sms"}}
        )

    def pause(self) -> None:
        self.made(f"/sequences/{self.sequence['id']}/pause")


# Each id the examples use, and what stands for it.
STAND_INS: dict[str, Callable[[World], str]] = {
    ex.WORKSPACE_ID: lambda world: world.tenant.workspace_id,
    ex.SEQUENCE_ID: lambda world: world.sequence["id"],
    **{step_id: (lambda world, i=i: world.step(i)) for i, step_id in enumerate(ex.STEP_IDS)},
    ex.CONTACT_ID: lambda world: world.contact,
    ex.OTHER_CONTACT_ID: lambda world: world.other_contact,
    ex.USER_ID: lambda world: world.member,
}
# Each path parameter, and what it names.
PATH_IDS: dict[str, Callable[[World], str]] = {
    "workspace_id": STAND_INS[ex.WORKSPACE_ID],
    "sender_id": lambda world: world.email_sender,  # (an email sender's inbox can be watched)
    "sequence_id": STAND_INS[ex.SEQUENCE_ID],
    "step_id": STAND_INS[ex.STEP_IDS[0]],  # (an SMS step: it renders)
    "contact_id": STAND_INS[ex.CONTACT_ID],
    "enrollment_id": lambda world: world.enrollment,
    "task_id": lambda world: world.task,
    "user_id": STAND_INS[ex.USER_ID],
    "endpoint_id": lambda world: world.endpoint,
}
# What must be so before an operation accepts its example.
PREPARE: dict[tuple[str, str], Callable[[World], None]] = {
    ("POST", "/api/v1/members"): World.new_user,  # the user it adds is no member yet
    ("POST", "/api/v1/contacts/{contact_id}/resubscribe"): World.opt_out,  # only an opt-out is cleared
    ("POST", "/api/v1/sequences/{sequence_id}/activate"): World.pause,  # only a draft or paused one starts
}


def stood_in(value: Any, world: World) -> Any:
    if isinstance(value, str) and value in STAND_INS:
        return STAND_INS[value](world)
    if isinstance(value, dict):
        return {key: stood_in(item, world) for key, item in value.items()}
    if isinstance(value, list):
        return [stood_in(item, world) for item in value]
    return value


def send(world: World, method: str, path: str, media_type: str, example: Any) -> Any:
    url = re.sub(r"\{(\w+)\}", lambda parameter: PATH_IDS[parameter.group(1)](world), path)
    # A person creates workspaces (an API key belongs to its one workspace); every other call uses the key.
    headers = (
        world.tenant.user_headers
        if (method, path) == ("POST", "/api/v1/workspaces")
        else world.tenant.headers
    )
    if method == "POST":  # every POST as a careful client sends it: with a key (none may then fail)
        headers = headers | {"Idempotency-Key": str(uuid.uuid4())}
    if media_type == "application/json":
        return world.tenant.client.request(method, url, json=stood_in(example, world), headers=headers)
    return world.tenant.client.request(
        method, url, content=example, headers=headers | {"content-type": media_type}
    )


def test_the_preparations_are_for_operations_with_examples():
    assert PREPARE.keys() <= {(method, path) for method, path, *_ in (p.values for p in REQUEST_EXAMPLES)}


@pytest.mark.parametrize(("method", "path", "media_type", "example"), REQUEST_EXAMPLES)
def test_every_request_example_is_accepted(tenant, db_url, monkeypatch, method, path, media_type, example):
    FakeDns(monkeypatch).answer(WEBHOOK_HOST, ["93.184.215.14"])
    world = World(tenant, db_url)
    if prepare := PREPARE.get((method, path)):
        prepare(world)
    response = send(world, method, path, media_type, example)
    assert 200 <= response.status_code < 300, f"{example!r}: {response.status_code} {response.text}"
