"""A loopback stand-in of Klaviyo's API for the operations the hub uses.

Every request body is validated against the operation's request schema in Klaviyo's own
OpenAPI documents (contracts/klaviyo/ beside this module, OpenAPI 3.0 turned into JSON Schema, $refs
resolved within the document, unknown attributes refused as Klaviyo does). Answers use the
documented status codes and JSON:API bodies, including `errors[].detail` on 4xx. Each operation
answers 429 with Retry-After past its documented burst and steady limits. Bulk profile imports
are jobs: accepted at once (202, `queued`), applied `job_delay` seconds later, their refused
profiles listed as import errors.

The schema checks need the contracts folder (`contracts=`, standins.CONTRACTS by default)
and jsonschema (the [demo] and [test] extras); without either the stand-in answers the same,
unvalidated.

    with FakeKlaviyo(api_key="pk_test") as klaviyo:
        settings.KLAVIYO_BASE_URL = klaviyo.url
        ...
        klaviyo.profiles, klaviyo.events, klaviyo.consent, klaviyo.operations("bulk_import_profiles")
        klaviyo.duplicate_events, klaviyo.profile_writes  # what a resend cost
        klaviyo.jobs[job_id]["attributes"]["status"], klaviyo.import_errors[job_id]
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlencode

try:
    from jsonschema import Draft202012Validator
except ImportError:  # a plain install: no schema checks
    Draft202012Validator = None

from standins import CONTRACTS
from standins.loopback import Call, LoopbackServer, new_id

# Method and path of each operation, as in its contract document: the routes when the
# contracts folder is absent (each file is named for its operationId).
PATHS = {
    "create_or_update_profile": ("POST", "/api/profile-import"),
    "bulk_import_profiles": ("POST", "/api/profile-bulk-import-jobs"),
    "get_bulk_import_profiles_job": ("GET", "/api/profile-bulk-import-jobs/{job_id}"),
    "get_errors_for_bulk_import_profiles_job": ("GET", "/api/profile-bulk-import-jobs/{id}/import-errors"),
    "create_event": ("POST", "/api/events"),
    "bulk_create_events": ("POST", "/api/event-bulk-create-jobs"),
    "bulk_subscribe_profiles": ("POST", "/api/profile-subscription-bulk-create-jobs"),
    "bulk_unsubscribe_profiles": ("POST", "/api/profile-subscription-bulk-delete-jobs"),
    "add_profiles_to_list": ("POST", "/api/lists/{id}/relationships/profiles"),
    "get_profiles": ("GET", "/api/profiles"),
}


def validating(contracts: Path) -> bool:
    """Whether requests are checked against the contracts (folder and jsonschema present)."""
    return Draft202012Validator is not None and contracts.is_dir()


def _json_schema(node):
    """OpenAPI 3.0 schema → JSON Schema: `nullable`, and closed objects (Klaviyo refuses unknown keys)."""
    if isinstance(node, list):
        return [_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key in ("example", "default", "enum"):
            out[key] = value
        elif key == "properties":  # a map of names to schemas, not a schema itself
            out[key] = {name: _json_schema(schema) for name, schema in value.items()}
        else:
            out[key] = _json_schema(value)
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False
    if out.pop("nullable", False):
        if "type" in out and "$ref" not in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out:
                out["enum"] = out["enum"] + [None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


@lru_cache(maxsize=None)
def operation(contracts: Path, file: str) -> tuple[str, str, str, Draft202012Validator | None]:
    """(method, path, operationId, request validator) of one contract document in `contracts`."""
    if not validating(contracts):
        method, path = PATHS[file]
        return method, path, file, None
    document = json.loads((contracts / f"{file}.json").read_text())
    [(path, ops)] = document["paths"].items()
    [(method, op)] = ops.items()
    validator = None
    content = (op.get("requestBody") or {}).get("content", {})
    if content:
        [media] = content.values()
        components = {"schemas": {k: _json_schema(v) for k, v in document["components"]["schemas"].items()}}
        schema = {"$ref": media["schema"]["$ref"], "components": components}
        validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    return method.upper(), path, op["operationId"], validator


@lru_cache(maxsize=None)
def rate_limits(contracts: Path, file: str) -> tuple[tuple[int, float], ...]:
    """(requests, window seconds) of an operation's burst and steady limits, from
    `x-klaviyo-ratelimit` in its contract document ("10/s", "150/m"); none without the folder.

    Klaviyo counts per account, in fixed windows of one second (burst) and one minute
    (steady), and answers 429 once either is spent:
    https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling"""
    path = contracts / f"{file}.json"
    if not path.is_file():
        return ()
    [(_, ops)] = json.loads(path.read_text())["paths"].items()
    [op] = ops.values()
    spans = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
    limits = []
    for text in (op.get("x-klaviyo-ratelimit") or {}).values():
        count, unit = text.split("/")
        limits.append((int(count), spans[unit]))
    return tuple(limits)


def _route(contracts: Path, file: str) -> tuple[str, str, str]:
    method, path, operation_id, _ = operation(contracts, file)
    return method, re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path), operation_id


FILES = ("create_or_update_profile", "bulk_import_profiles", "get_bulk_import_profiles_job",
         "get_errors_for_bulk_import_profiles_job", "create_event", "bulk_create_events",
         "bulk_subscribe_profiles", "bulk_unsubscribe_profiles", "add_profiles_to_list", "get_profiles")

# Klaviyo's own words for the identifiers it refuses (its SDKs' fixtures of real answers,
# e.g. klaviyo/klaviyo-swift-sdk TestUtils.swift TEST_FAILURE_JSON_INVALID_EMAIL / _PHONE_NUMBER):
# phone numbers must be E.164 ("+" and up to 15 digits, e.g. +12345678901).
INVALID_EMAIL = "Invalid email address"
INVALID_PHONE = "Invalid phone number format (Example of a valid format: +12345678901)"
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_E164 = re.compile(r"\+[1-9]\d{6,14}")


class Invalid(Exception):
    def __init__(self, detail: str, pointer: str = "/data/", status: int = 400, code: str = "invalid"):
        super().__init__(detail)
        self.detail, self.pointer, self.status, self.code = detail, pointer, status, code


class FakeKlaviyo(LoopbackServer):
    """Klaviyo with a profile store, events (deduplicated by unique_id), consent and lists."""

    # The operations without a contract document in contracts/klaviyo: Request Profile
    # Deletion (its shape, DataPrivacyCreateDeletionJobQuery of klaviyo-api, is checked by hand
    # in the handler) and Get Accounts. The others' routes are their documents' own, read per
    # instance from its contracts folder.
    ROUTES = [("POST", r"/api/data-privacy-deletion-jobs/?", "request_profile_deletion"),
              ("GET", r"/api/accounts/?", "get_accounts")]  # `hub install --check`

    def __init__(self, api_key: str = "pk_test", validate: bool = True, contracts: Path = CONTRACTS,
                 job_delay: float = 0.05, rate_limited: bool = True):
        self.contracts = contracts
        # Seconds between a bulk import's 202 and its profiles being applied (Klaviyo: seconds
        # to minutes, "may take several hours" for large files).
        self.job_delay = job_delay
        self.rate_limited = rate_limited
        self._windows: dict[tuple[str, float], list[float]] = {}  # (operation, span) → [start, count]
        self.ROUTES = [_route(contracts, f) for f in FILES] + FakeKlaviyo.ROUTES
        super().__init__()
        self.api_key = api_key
        self.validate = validate  # schema checks cost ~1 ms per profile; a benchmark may skip them
        self.profiles: dict[str, dict] = {}  # id → attributes
        self.events: list[dict] = []  # recorded once per (profile, metric, unique_id)
        self.duplicate_events = 0  # resent events Klaviyo dropped
        # Profile id → profile import / bulk import writes of it: each one is applied again
        # (idempotent) and counts as a call, so a resend shows here, not in `profiles`.
        self.profile_writes: Counter = Counter()
        self.consent: dict[str, dict] = {}  # profile id → {channel: {"consent", "consented_at", "historical"}}
        self.consent_updated: dict[tuple[str, str], str] = {}  # (profile id, channel) → last change (last_updated)
        self.lists: dict[str, set[str]] = {}
        # Subscribe jobs that are not historical imports follow the list's opt-in setting:
        # lists here (or every subscribe when `account_double_opt_in`) send a confirmation
        # message and subscribe nobody until the person confirms; others subscribe at once and
        # start the list's "Added to list" flows.
        self.double_opt_in_lists: set[str] = set()
        self.account_double_opt_in = False
        self.confirmations: list[tuple[str, str | None]] = []  # (profile id, list id) asked to confirm
        self.list_flows: list[tuple[str, str]] = []  # (profile id, list id) "Added to list" flows started
        self.jobs: dict[str, dict] = {}
        self.import_errors: dict[str, list[dict]] = {}  # job id → its import-error resources
        self.invalid: list[str] = []  # validation failures, for test messages
        self._by_email: dict[str, str] = {}
        self._by_phone: dict[str, str] = {}
        self._event_keys: set[tuple] = set()
        self.deletions: list[dict] = []  # identifier attributes of each deletion request

    # Protocol -----------------------------------------------------------------------

    def error_body(self, status: int, message: str, pointer: str = "/data/", code: str | None = None) -> dict:
        codes = {400: "invalid", 401: "not_authenticated", 404: "not_found", 409: "duplicate_profile",
                 413: "payload_too_large", 429: "throttled"}
        return {"errors": [{"id": new_id(), "status": status, "code": code or codes.get(status, "error"),
                            "title": message, "detail": message, "source": {"pointer": pointer}}]}

    def authorized(self, call: Call) -> bool:
        return call.headers.get("Authorization") == f"Klaviyo-API-Key {self.api_key}"

    def rate_limit_wait(self, call: Call) -> float:
        """Klaviyo's fixed windows per operation: past the burst (per second) or the steady
        (per minute) count, 429 until the window ends; "Retry-After" says when
        (https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling). A refused
        request is not counted."""
        limits = rate_limits(self.contracts, call.operation) if self.rate_limited else ()
        now = time.monotonic()
        windows, wait = [], 0.0
        for count, span in limits:
            window = self._windows.setdefault((call.operation, span), [now, 0])
            if now - window[0] >= span:
                window[:] = [now, 0]
            if window[1] >= count:
                wait = max(wait, window[0] + span - now)
            windows.append(window)
        if wait:
            return wait
        for window in windows:
            window[1] += 1
        return 0.0

    def _valid(self, call: Call, file: str) -> None:
        if not call.headers.get("revision"):
            raise Invalid("The revision header is required.", "/headers/revision")
        if call.raw and len(call.raw) > 5 * 1024 * 1024:
            raise Invalid("Payload too large.", status=413, code="payload_too_large")
        _, _, _, validator = operation(self.contracts, file)
        if validator is None or not self.validate:
            return
        error = next(iter(sorted(validator.iter_errors(call.body), key=lambda e: list(e.path))), None)
        if error is not None:
            pointer = "/" + "/".join(str(p) for p in error.absolute_path)
            self.invalid.append(f"{call.operation}: {pointer}: {error.message}")
            raise Invalid(error.message, pointer)

    def _run(self, call: Call, file: str, handle):
        try:
            self._valid(call, file)
            return handle(call.body)
        except Invalid as exc:
            return exc.status, self.error_body(exc.status, exc.detail, exc.pointer, exc.code)

    # Profiles -----------------------------------------------------------------------

    def _upsert(self, attributes: dict, meta: dict | None = None, nulls_clear: bool = True) -> tuple[str, bool]:
        """Create or update one profile. Create or Update Profile clears a property sent as null
        and removes the keys named in `meta.patch_properties.unset` ("Remove a key or keys (and
        their values) completely from properties": ProfileMetaPatchProperties in
        contracts/klaviyo/create_or_update_profile.json;
        https://developers.klaviyo.com/en/reference/create_or_update_profile). Bulk Import
        Profiles does not: "does not support setting fields to null to clear them. Only fields
        explicitly provided with non-null values will be updated"
        (https://developers.klaviyo.com/en/docs/use_klaviyos_bulk_profile_import_api), so
        there (nulls_clear=False) a null keeps the previous value, and `unset`, which that page
        does not offer for removing values, is not applied."""
        email, phone = attributes.get("email"), attributes.get("phone_number")
        if not email and not phone:
            raise Invalid("One of email or phone_number is required.", "/data/attributes")
        by_email, by_phone = self._by_email.get(email), self._by_phone.get(phone)
        if by_email and by_phone and by_email != by_phone or (
                email and by_phone and not by_email and self.profiles[by_phone].get("email")):
            raise Invalid("A profile already exists with one of these identifiers.", "/data/attributes",
                          status=409, code="duplicate_profile")
        found = by_email or by_phone
        created = found is None
        pid = found or f"01{new_id().upper()}"
        profile = self.profiles.setdefault(pid, {"properties": {}})
        for key, value in attributes.items():
            if key == "properties":
                profile["properties"].update({k: v for k, v in (value or {}).items()
                                              if nulls_clear or v is not None})
            elif value is not None:
                profile[key] = value
        if nulls_clear:
            unset = ((meta or {}).get("patch_properties") or {}).get("unset") or []
            for name in [unset] if isinstance(unset, str) else unset:
                profile["properties"].pop(name, None)
        if profile.get("email"):
            self._by_email[profile["email"]] = pid
        if profile.get("phone_number"):
            self._by_phone[profile["phone_number"]] = pid
        return pid, created

    def create_or_update_profile(self, call):
        def handle(body):
            refused = _refused_identifier(body["data"]["attributes"])
            if refused:
                raise Invalid(*refused)
            pid, created = self._upsert(body["data"]["attributes"], body["data"].get("meta"))
            self.profile_writes[pid] += 1
            document = {"data": {"type": "profile", "id": pid, "attributes": self.profiles[pid],
                                 "links": {"self": f"{self.url}/api/profiles/{pid}/"}}}
            return (201 if created else 200), document
        return self._run(call, "create_or_update_profile", handle)

    def bulk_import_profiles(self, call):
        """Accepted as a job (202, `queued`) and applied `job_delay` seconds later: "the
        bulk profile import job ... is processed asynchronously"; its state is read with Get
        Bulk Import Profiles Job and the profiles it refused with Get Errors for Bulk Import
        Profiles Job. https://developers.klaviyo.com/en/reference/bulk_import_profiles,
        https://developers.klaviyo.com/en/reference/get_bulk_import_profiles_job

        A malformed email is refused at once, and with it the whole request: 400, one error per
        such profile with its `source.pointer`, nothing imported (Klaviyo validates a bulk
        import all or nothing; as integrations report it: rudderlabs/rudder-server#7107,
        segmentio/action-destinations#2498). Other refusals (a phone number) come later, as
        the job's import errors."""
        def handle(body):
            profiles = body["data"]["attributes"]["profiles"]["data"]
            if len(profiles) > 10_000:
                raise Invalid("A maximum of 10000 profiles can be imported per request.",
                              "/data/attributes/profiles/data")
            refused = _rows_refused([p["attributes"] for p in profiles], PROFILE_ROW)
            if refused:
                return refused
            lists = [rel["id"] for rel in
                     ((body["data"].get("relationships") or {}).get("lists") or {}).get("data", [])]
            job_id = f"01{new_id().upper()}"
            self.jobs[job_id] = {"type": "profile-bulk-import-job", "id": job_id, "attributes": {
                "status": "queued", "created_at": _now(), "total_count": len(profiles), "completed_count": 0,
                "failed_count": 0, "completed_at": None, "expires_at": None, "started_at": None},
                "links": {"self": f"{self.url}/api/profile-bulk-import-jobs/{job_id}/"}}
            self.import_errors[job_id] = []
            timer = threading.Timer(self.job_delay, self._run_import, (job_id, profiles, lists))
            timer.daemon = True
            timer.start()
            return 202, {"data": json.loads(json.dumps(self.jobs[job_id]))}
        return self._run(call, "bulk_import_profiles", handle)

    def _run_import(self, job_id: str, profiles: list[dict], lists: list[str]) -> None:
        """Apply a bulk import: each profile alone, a refused one listed as an import error
        (code, title, detail, source, original_payload: ImportErrorResponseObjectResource in
        contracts/klaviyo/get_errors_for_bulk_import_profiles_job.json), the others applied."""
        with self.lock:
            job = self.jobs[job_id]["attributes"]
            job.update(status="processing", started_at=_now())
            ids = []
            for index, profile in enumerate(profiles):
                attributes = profile["attributes"]
                try:
                    refused = _refused_identifier(attributes)
                    if refused:
                        raise Invalid(*refused)
                    ids.append(self._upsert(attributes, nulls_clear=False)[0])
                except Invalid as exc:
                    self.import_errors[job_id].append({"type": "import-error", "id": new_id(), "attributes": {
                        "code": exc.code, "title": "Invalid input.", "detail": exc.detail,
                        "source": {"pointer": f"/data/attributes/profiles/data/{index}{exc.pointer[5:]}"},
                        "original_payload": attributes}})
            self.profile_writes.update(ids)
            for list_id in lists:
                self.lists.setdefault(list_id, set()).update(ids)
            job.update(status="complete", completed_count=len(ids), failed_count=len(profiles) - len(ids),
                       completed_at=_now())

    def get_bulk_import_profiles_job(self, call):
        job = self.jobs.get(call.params["job_id"])
        if job is None:
            return 404, self.error_body(404, "Not found.")
        return 200, {"data": json.loads(json.dumps(job))}

    def get_errors_for_bulk_import_profiles_job(self, call):
        """A page of a job's import errors: `page[size]` (default 20, at most 100) from the
        `page[cursor]` that the previous page's `links.next` named."""
        job_id = call.params["id"]
        if job_id not in self.jobs:
            return 404, self.error_body(404, "Not found.")
        here = f"{self.url}/api/profile-bulk-import-jobs/{job_id}/import-errors"
        try:
            errors, links = self._page(call, self.import_errors[job_id], here)
        except Invalid as exc:
            return exc.status, self.error_body(exc.status, exc.detail, exc.pointer)
        return 200, {"data": errors, "links": links}

    def _page(self, call: Call, items: list, here: str) -> tuple[list, dict]:
        """(`page[size]` items from `page[cursor]`, links with `next` unless it is the last page);
        Klaviyo's cursor-based paging, 20 a page by default and at most 100.
        https://developers.klaviyo.com/en/reference/api-overview#pagination"""
        try:
            size = int((call.query.get("page[size]") or ["20"])[0])
            start = int((call.query.get("page[cursor]") or ["0"])[0])
        except ValueError:
            raise Invalid("Invalid page parameter.", "/page") from None
        if not 1 <= size <= 100:
            raise Invalid("page[size] must be between 1 and 100.", "/page[size]")
        links = {"self": f"{here}?{urlencode({'page[size]': size, 'page[cursor]': start})}"}
        if start + size < len(items):
            links["next"] = f"{here}?{urlencode({'page[size]': size, 'page[cursor]': start + size})}"
        return items[start:start + size], links

    def add_profiles_to_list(self, call):
        def handle(body):
            if len(body["data"]) > 1000:
                raise Invalid("A maximum of 1000 profiles can be added per request.")
            self.lists.setdefault(call.params["id"], set()).update(p["id"] for p in body["data"])
            return 204, None
        return self._run(call, "add_profiles_to_list", handle)

    # Events -------------------------------------------------------------------------

    def _record_event(self, profile_attributes: dict, event: dict) -> None:
        pid, _ = self._upsert({k: v for k, v in profile_attributes.items() if k != "properties"})
        metric = event["metric"]["data"]["attributes"]["name"]
        # Create Event's `unique_id`: of events repeating one for a profile and metric, Klaviyo
        # records the first processed only; without one, the event time to the second is the
        # key. A dropped resend is answered 202 like any other.
        # https://developers.klaviyo.com/en/reference/create_event (EventCreateQueryV2 in
        # shared/contracts/klaviyo/create_event.json; bulk_create_events uses the same event).
        at = event.get("time") or datetime.now(timezone.utc).isoformat()
        key = (pid, metric, event.get("unique_id") or _to_the_second(at))
        if key in self._event_keys:
            self.duplicate_events += 1
            return
        self._event_keys.add(key)
        self.events.append({"profile_id": pid, "metric": metric, "unique_id": event.get("unique_id"),
                            "time": event.get("time"), "properties": event.get("properties"),
                            "backfill": bool(event.get("backfill"))})

    def create_event(self, call):
        def handle(body):
            attributes = body["data"]["attributes"]
            self._record_event(attributes["profile"]["data"]["attributes"], attributes)
            return 202, None
        return self._run(call, "create_event", handle)

    def bulk_create_events(self, call):
        def handle(body):
            entries = body["data"]["attributes"]["events-bulk-create"]["data"]
            total = sum(len(e["attributes"]["events"]["data"]) for e in entries)
            if total > 1000:
                raise Invalid("A maximum of 1000 events can be created per request.")
            # All or nothing, as Bulk Import Profiles (segmentio/action-destinations#2498).
            refused = _rows_refused([e["attributes"]["profile"]["data"]["attributes"] for e in entries], EVENT_ROW)
            if refused:
                return refused
            seen = set()
            for entry in entries:
                who = json.dumps(entry["attributes"]["profile"]["data"]["attributes"], sort_keys=True)
                for event in entry["attributes"]["events"]["data"]:
                    a = event["attributes"]
                    key = (who, a["metric"]["data"]["attributes"]["name"], a.get("unique_id"))
                    if a.get("unique_id") and key in seen:
                        raise Invalid(f"Duplicate unique_id {a['unique_id']!r} for the same profile and metric.")
                    seen.add(key)
            for entry in entries:
                for event in entry["attributes"]["events"]["data"]:
                    self._record_event(entry["attributes"]["profile"]["data"]["attributes"], event["attributes"])
            return 202, None
        return self._run(call, "bulk_create_events", handle)

    # Consent ------------------------------------------------------------------------

    def bulk_subscribe_profiles(self, call):
        def handle(body):
            attributes = body["data"]["attributes"]
            profiles = attributes["profiles"]["data"]
            historical = bool(attributes.get("historical_import"))
            if len(profiles) > 1000:
                raise Invalid("A maximum of 1000 profiles can be subscribed per request.")
            refused = _rows_refused([p["attributes"] for p in profiles], PROFILE_ROW)  # as the imports
            if refused:
                return refused
            for p in profiles:
                for params in p["attributes"]["subscriptions"].values():
                    at = (params.get("marketing") or {}).get("consented_at")
                    if at and not historical:
                        raise Invalid("consented_at can only be set when historical_import is true.")
                    if historical and not at:
                        raise Invalid("consented_at is required when historical_import is true.")
                    if at and datetime.fromisoformat(at) > datetime.now(timezone.utc):
                        raise Invalid("consented_at must be in the past.")
            list_id = ((body["data"].get("relationships") or {}).get("list") or {}).get("data", {}).get("id")
            # "If the provided list has double opt-in enabled, profiles will receive a message
            # requiring their confirmation before subscribing ... If a list is not provided, the
            # opt-in process used will be determined by the account-level default". With
            # `historical_import` they "bypass double opt-in emails and be subscribed immediately.
            # They will also bypass any associated 'Added to list' flows."
            # https://developers.klaviyo.com/en/reference/bulk_subscribe_profiles
            double = (list_id in self.double_opt_in_lists if list_id else self.account_double_opt_in)
            now = datetime.now(timezone.utc).isoformat()
            for p in profiles:
                pid, _ = self._upsert({k: v for k, v in p["attributes"].items() if k in ("email", "phone_number")})
                if double and not historical:
                    self.confirmations.append((pid, list_id))
                    continue
                for channel, params in p["attributes"]["subscriptions"].items():
                    self.consent.setdefault(pid, {})[channel] = {
                        "consent": "SUBSCRIBED", "consented_at": params["marketing"].get("consented_at") or now,
                        "historical": historical}
                    self.consent_updated[(pid, channel)] = now
                if list_id:
                    self.lists.setdefault(list_id, set()).add(pid)
                    if not historical:
                        self.list_flows.append((pid, list_id))
            return 202, None
        return self._run(call, "bulk_subscribe_profiles", handle)

    def bulk_unsubscribe_profiles(self, call):
        def handle(body):
            profiles = body["data"]["attributes"]["profiles"]["data"]
            if len(profiles) > 100:
                raise Invalid("A maximum of 100 profiles can be unsubscribed per request.")
            refused = _rows_refused([p["attributes"] for p in profiles], PROFILE_ROW)
            if refused:
                return refused
            for p in profiles:
                pid, _ = self._upsert({k: v for k, v in p["attributes"].items() if k in ("email", "phone_number")})
                for channel in p["attributes"]["subscriptions"]:
                    self.consent.setdefault(pid, {})[channel] = {"consent": "UNSUBSCRIBED", "consented_at": None}
                    self.consent_updated[(pid, channel)] = _now()
            return 202, None
        return self._run(call, "bulk_unsubscribe_profiles", handle)

    def get_profiles(self, call):
        """GET /api/profiles: `page[size]` profiles (default 20, at most 100) from `page[cursor]`,
        `links.next` naming the following page; each profile's `subscriptions` only when
        `additional-fields[profile]` asks for them (SUBSCRIBED, UNSUBSCRIBED or NEVER_SUBSCRIBED
        per channel, with consent_timestamp). Rate-limited like every operation (75/s, 750/m
        in its contract). https://developers.klaviyo.com/en/reference/get_profiles"""
        if not call.headers.get("revision"):
            return 400, self.error_body(400, "The revision header is required.", "/headers/revision")
        extra = {v for text in call.query.get("additional-fields[profile]", []) for v in text.split(",")}
        unknown = extra - {"subscriptions", "predictive_analytics"}
        if unknown:
            return 400, self.error_body(400, f"Invalid additional-fields: {sorted(unknown)}", "/additional-fields")
        try:
            ids, links = self._page(call, list(self.profiles), f"{self.url}/api/profiles")
        except Invalid as exc:
            return exc.status, self.error_body(exc.status, exc.detail, exc.pointer)
        data = []
        for pid in ids:
            attributes = dict(self.profiles[pid])
            if "subscriptions" in extra:
                attributes["subscriptions"] = self._subscriptions(pid)
            data.append({"type": "profile", "id": pid, "attributes": attributes,
                         "links": {"self": f"{self.url}/api/profiles/{pid}/"}})
        return 200, {"data": data, "links": links}

    def _subscriptions(self, pid: str) -> dict:
        """Subscriptions of one profile (Subscriptions in contracts/klaviyo/get_profiles.json)."""
        held = self.consent.get(pid, {})
        found = {}
        for channel in ("email", "sms"):
            one = held.get(channel) or {}
            found[channel] = {"marketing": {
                "consent": one.get("consent", "NEVER_SUBSCRIBED"),
                f"can_receive_{channel}_marketing": one.get("consent") == "SUBSCRIBED",
                "consent_timestamp": one.get("consented_at"),
                "last_updated": self.consent_updated.get((pid, channel))}}
        return found

    def get_accounts(self, call):
        """GET /api/accounts: the key's account (what `hub install --check` reads)."""
        return 200, {"data": [{"type": "account", "id": "AbC123", "attributes": {
            "contact_information": {"organization_name": "Stand-in store"}}}]}

    # Data privacy -------------------------------------------------------------------

    def request_profile_deletion(self, call):
        """POST /api/data-privacy-deletion-jobs: exactly one of email, phone_number or id."""
        if not call.headers.get("revision"):
            return 400, self.error_body(400, "The revision header is required.", "/headers/revision")
        data = (call.body or {}).get("data") if isinstance(call.body, dict) else None
        if not isinstance(data, dict) or data.get("type") != "data-privacy-deletion-job" \
                or set(data) - {"type", "attributes"}:
            self.invalid.append("request_profile_deletion: /data: expected a data-privacy-deletion-job")
            return 400, self.error_body(400, "Invalid data-privacy-deletion-job.", "/data/type")
        profile = ((data.get("attributes") or {}).get("profile") or {}).get("data") or {}
        who = {k: v for k, v in (profile.get("attributes") or {}).items() if v}
        if profile.get("id"):
            who["id"] = profile["id"]
        if profile.get("type") != "profile" or set(who) - {"email", "phone_number", "id"} or len(who) != 1:
            self.invalid.append(f"request_profile_deletion: /data/attributes/profile: {sorted(who)}")
            return 400, self.error_body(400, "Exactly one of email, phone_number or id is required.",
                                        "/data/attributes/profile/data/attributes")
        self.deletions.append(who)
        [(key, value)] = who.items()
        index = {"email": self._by_email, "phone_number": self._by_phone}.get(key)
        pid = value if key == "id" else index.get(value)
        gone = self.profiles.pop(pid, None) if pid else None
        if gone is not None:
            self._by_email.pop(gone.get("email"), None)
            self._by_phone.pop(gone.get("phone_number"), None)
            self.consent.pop(pid, None)
        return 202, None

    # Reading back -------------------------------------------------------------------

    def profile(self, email: str) -> dict | None:
        return self.profiles.get(self._by_email.get(email))

    def profile_id(self, email: str) -> str | None:
        return self._by_email.get(email)


PROFILE_ROW = "/data/attributes/profiles/data/{}/attributes/email"
EVENT_ROW = "/data/attributes/events-bulk-create/data/{}/attributes/profile/data/attributes/email"


def _rows_refused(rows: list[dict], pointer: str) -> tuple[int, dict] | None:
    """A bulk request of these profile attributes refused whole for its malformed emails: 400,
    one error per such row, its pointer `pointer` with the row's index (nothing of the request
    applied); None when every row's email is well formed."""
    bad = [index for index, attributes in enumerate(rows) if _malformed_email(attributes)]
    if not bad:
        return None
    return 400, {"errors": [{"id": new_id(), "status": 400, "code": "invalid", "title": "Invalid input.",
                             "detail": INVALID_EMAIL, "source": {"pointer": pointer.format(row)}} for row in bad]}


def _malformed_email(attributes: dict) -> bool:
    return attributes.get("email") is not None and not _EMAIL.fullmatch(attributes["email"])


def _refused_identifier(attributes: dict) -> tuple[str, str] | None:
    """(Klaviyo's message, pointer) for an email or phone number it does not take; None if both do."""
    phone = attributes.get("phone_number")
    if _malformed_email(attributes):
        return INVALID_EMAIL, "/data/attributes/email"
    if phone is not None and not _E164.fullmatch(phone):
        return INVALID_PHONE, "/data/attributes/phone_number"
    return None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _to_the_second(at: str) -> str:
    """An event time cut to the second, in UTC (Klaviyo's unique_id when none is given)."""
    return datetime.fromisoformat(at.replace("Z", "+00:00")).astimezone(timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%S")
