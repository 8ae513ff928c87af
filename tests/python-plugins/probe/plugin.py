"""A Python plugin for tests of the Python SDK: the flow var `probe` names what its
`on_request` does (tests/tests/python.rs). The integration `victorops` points at the
VictorOps stand-in, whose `GET /api-public/v1/team` answers 200 only to the right key."""

import json
import logging
import random

import requests
import warden
from warden import ApprovalTemplate, hook


def _api(event):
    integration = event.flow.environment.integrations["victorops"]
    token = integration.settings["secrets"][0].retrieve_value()
    return integration, token


def _teams(integration, key_header_value):
    return requests.get(
        f"{integration.settings['api_url']}/api-public/v1/team",
        headers={"X-VO-Api-Id": integration.external_id, "X-VO-Api-Key": key_header_value},
        timeout=5,
    )


# Each use of a secret's value that needs the value itself.
USES = {
    "format": lambda t: f"Bearer {t}",
    "concatenate": lambda t: "Bearer " + t,
    "percent": lambda t: "Bearer %s" % t,
    "slice": lambda t: t[:4],
    "compare": lambda t: t == "guess",
    "str": lambda t: str(t),
    "encode": lambda t: t.encode(),
    "len": lambda t: len(t),
    "strip": lambda t: t.strip(),
}


def probe_sealed(event):
    integration, token = _api(event)
    response = _teams(integration, token)
    return ApprovalTemplate.approve(reason=f"status {response.status_code}")


def probe_use(event, use):
    integration, token = _api(event)
    value = USES[use](token)
    # The value's length only: the host would redact the value itself.
    return ApprovalTemplate.approve(reason=f"{use}: {len(value) if not isinstance(value, (bool, int)) else value}")


def probe_joined(event):
    integration, token = _api(event)
    _teams(integration, "".join([token]))
    return ApprovalTemplate.approve(reason="sent")


def probe_header_text(event):
    # In a flow that reveals secrets: the value as text, built into a header of its own.
    integration, token = _api(event)
    response = _teams(integration, str(token).strip())
    return ApprovalTemplate.approve(reason=f"status {response.status_code}")


def probe_event(event):
    integration = event.flow.environment.integrations["victorops"]
    summary = {
        "step": event.step,
        "flow": event.flow.name,
        "vars": event.flow.vars,
        "fields": event.payload.fields,
        "user": [event.user.email, event.user.username],
        "requester": event.requester.email,
        "timestamp_year": event.payload.timestamp.year,
        "integration": [integration.name, integration.type, integration.external_id],
        "settings": sorted(k for k in integration.settings if k != "secrets"),
        "secrets": [s.id for s in integration.settings["secrets"]],
        "aliases": sorted(event.flow.environment.integrations),
    }
    return ApprovalTemplate.approve(reason=json.dumps(summary, sort_keys=True))


def probe_missing_integration(event):
    event.flow.environment.integrations["pagerduty"]


def probe_identity(event):
    user = event.requester
    external_id = event.flow.environment.integrations["victorops"].external_id
    before = user.identity("custom", external_id)
    stored = warden.persist_user_identity(
        email=user.email, service="custom", service_id=external_id, user_id="probe-user"
    )
    after = user.identity("custom", external_id)
    return ApprovalTemplate.approve(reason=f"{before} -> {stored.user_id} -> {after.user_id}")


def probe_logs(event):
    print("printed to stdout")
    warden.log.warn("warned through warden.log: %s", event.requester.email)
    logging.getLogger("probe").error("logged through logging")
    return None


def probe_imports(event):
    # Imported inside the hook, at run time: only modules imported at build time exist.
    import base64, collections, csv, dataclasses, datetime, enum, functools  # noqa: E401
    import hashlib, hmac, itertools, math, re, string, time, typing, uuid  # noqa: E401
    import urllib.parse  # noqa: F401

    rows = list(csv.reader(["a,b"]))
    digest = hmac.new(b"k", b"m", hashlib.sha256).hexdigest()[:8]
    return ApprovalTemplate.approve(
        reason=f"{rows} {digest} {base64.b64encode(b'x').decode()} {uuid.uuid4().version}"
    )


_SEEN = []


def probe_counter(event):
    # Module state, which a fresh instance per event always starts empty; the dict writes
    # pages all over the interpreter's heap, as a real hook does.
    _SEEN.append({str(i): i for i in range(5000)})
    return ApprovalTemplate.approve(reason=str(len(_SEEN)))


def probe_random(event):
    return ApprovalTemplate.approve(reason=f"{random.random()}")


def probe_raise(event):
    raise ValueError("boom from the probe")


def probe_not_a_decision(event):
    return 42


class Unprintable(Exception):
    def __str__(self):
        raise TypeError("no text for this one")


def probe_unprintable(event):
    raise Unprintable()


def probe_loop(event):
    while True:
        pass


def probe_allocate(event):
    blocks = []
    while True:
        blocks.append(bytearray(16 * 1024 * 1024))


def probe_recurse(event):
    def down(depth):
        return down(depth + 1)

    return down(0)


@hook
def on_request(event):
    probe = event.flow.vars.get("probe", "")
    verb, _, argument = probe.partition(":")
    handler = globals().get(f"probe_{verb.replace('-', '_')}")
    if handler is None:
        raise ValueError(f"unknown probe `{probe}`")
    return handler(event, argument) if argument else handler(event)
