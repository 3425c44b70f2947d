"""Schemathesis hooks for scripts/fuzz-openapi: what the fuzzer cannot derive from the document.

- `mdm=` names an MDM *of the path's tenant* (an unknown name is a 400 by
  design), which no static schema can say: in a request whose query was
  generated as valid, the value is set to the tenant's MDM, read from the
  live daemon's tenant list at start.
- `{device_id}` and `{action_id}` are store ids the fuzzer cannot guess:
  in a request whose path was generated as valid, three in four of them
  are mapped (by the generated number) onto an id of the path's tenant, so
  positive runs reach the handlers' answers for real devices and actions,
  and the rest still probe unknown ids (404).
- Agent requests carry an HMAC signature over the exact body. A request whose
  signature headers hold the placeholders of scripts/fuzz-openapi.toml, for
  the tenant whose secret the demo printed, is signed as it leaves (a
  `requests` auth hook sees the final bytes); any other agent request goes
  out as generated and must get the documented 401.

At exit, the answers per operation and status are printed, so a run shows
how far it got (for the agent API: 401 means it stopped at the signature).
"""

import atexit
import collections
import hashlib
import hmac
import json
import os
import sys
import threading
import time
import urllib.request

import requests
import schemathesis

BASE_URL = os.environ["FUZZ_BASE_URL"]
ADMIN_TOKEN = os.environ["FUZZ_ADMIN_TOKEN"]
AGENT_SECRET = os.environ["FUZZ_AGENT_SECRET"]
# The demo's tenant whose agent secret it prints, and the placeholders the
# config file puts in the signature headers.
AGENT_TENANT = "acme"
TIMESTAMP_PLACEHOLDER = "0"
SIGNATURE_PLACEHOLDER = "v1=" + "0" * 64


def _get(path):
    request = urllib.request.Request(BASE_URL + path, headers={"Authorization": "Bearer " + ADMIN_TOKEN})
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.load(answer)


# What the demo holds, per tenant: its MDMs' names, its devices' and actions' ids.
MDMS = {}
IDS = {}
for _tenant in _get("/v1/admin/tenants?limit=500")["items"]:
    _id = _tenant["id"]
    MDMS[_id] = [m["name"] for m in _tenant["mdms"]]
    IDS[_id] = {
        name: [item["id"] for item in _get(f"/v1/admin/tenants/{_id}/{path}?limit=500")["items"]]
        for name, path in (("device_id", "devices"), ("action_id", "actions"))
    }


class SignAgentRequest(requests.auth.AuthBase):
    """Signs the prepared request, body as sent, with the agent secret."""

    def __call__(self, r):
        body = r.body or b""
        if isinstance(body, str):
            body = body.encode()
        timestamp = str(int(time.time()))
        mac = hmac.new(AGENT_SECRET.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
        r.headers["X-Mtd-Timestamp"] = timestamp
        r.headers["X-Mtd-Signature"] = "v1=" + mac.hexdigest()
        return r


def _positive(case, location):
    meta = case.meta
    if meta is None:
        return False
    component = meta.components.get(location)
    if component is None:
        return meta.generation.mode.is_positive
    return component.mode.is_positive


@schemathesis.hook
def before_call(ctx, case, kwargs):
    path = case.operation.path
    params = case.path_parameters or {}
    tenant = params.get("tenant")
    if _positive(case, "path") and tenant in IDS:
        for name, ids in IDS[tenant].items():
            value = params.get(name)
            if isinstance(value, int) and ids and value % 4 != 0:
                params[name] = ids[value % len(ids)]
    if case.query and "mdm" in case.query and _positive(case, "query"):
        names = MDMS.get(tenant)
        if names:
            case.query["mdm"] = names[0]
    if path.startswith("/v1/agent/"):
        headers = case.headers or {}
        if (
            headers.get("X-Mtd-Tenant") == AGENT_TENANT
            and headers.get("X-Mtd-Timestamp") == TIMESTAMP_PLACEHOLDER
            and headers.get("X-Mtd-Signature") == SIGNATURE_PLACEHOLDER
        ):
            kwargs["auth"] = SignAgentRequest()


ANSWERS = collections.Counter()
SLOWEST = {}
_ANSWERS_LOCK = threading.Lock()


@schemathesis.hook
def after_call(ctx, case, response):
    operation = case.operation.method.upper() + " " + case.operation.path
    with _ANSWERS_LOCK:
        ANSWERS[(operation, response.status_code)] += 1
        SLOWEST[operation] = max(SLOWEST.get(operation, 0.0), response.elapsed)


@atexit.register
def _print_answers():
    by_operation = collections.defaultdict(list)
    for (operation, status), n in sorted(ANSWERS.items()):
        by_operation[operation].append(f"{status}: {n}")
    print("\nAnswers per operation (status: requests; slowest answer):", file=sys.stderr)
    for operation, counts in by_operation.items():
        print(f"  {operation:<72} {', '.join(counts)}; {SLOWEST[operation]:.2f} s", file=sys.stderr)
