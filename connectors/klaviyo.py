"""Klaviyo through the official klaviyo-api SDK: profiles, events and consent.

- Profiles: create-or-update one by one for a few, bulk import jobs (≤ 10,000 profiles,
  ≤ 5 MB) for many; an optional list per stage (mapping `stage_lists`). A bulk import keeps
  a property sent as null, so a profile that empties one goes one by one, with the emptied
  properties in `meta.patch_properties.unset`.
- A bulk import is a job: Klaviyo's 202 says it is queued, not applied. The connector reads
  the job (rate-limited like every call) until it is complete, for at most `job_wait`
  seconds, then reads its import errors when it counts any: a profile Klaviyo refused is
  Failed with Klaviyo's message, the others Sent. A job not finished by then is RetryAfter for all of its
  deliveries: resending a profile import is harmless (the same values applied again, and
  the outbox cancels an older delivery that a newer one for the subscriber supersedes).
  Waiting here, not in a later scheduled check, keeps one Result per delivery per push
  with no state between pushes; imports of up to 10,000 profiles usually finish in seconds.
- Triggers: events whose `unique_id` is the trigger key, so Klaviyo drops a resend; a bulk
  request never holds one unique_id twice (Klaviyo would reject the whole request).
- Klaviyo validates a bulk request (an import, events) all or nothing: one malformed email
  refuses it whole, each bad row named by its error's `source.pointer`. Those rows fail with
  Klaviyo's words and the rest is sent again at once (`_send_rows`).
- Consent: only bulk subscribe / unsubscribe jobs, only for the channel the source named.
  A consent given now is a plain subscribe, so the list's double opt-in and its "Added to
  list" flows run; a backfilled one carries its own time with `historical_import` (no
  confirmation mail, no flows for an old opt-in).
"""
from __future__ import annotations

import functools
import itertools
import json
import re
import time
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, urlsplit

import urllib3
from klaviyo_api import KlaviyoAPI
from openapi_client.api_arg_options import USE_DICTIONARY_FOR_RESPONSE_DATA
from openapi_client.exceptions import ApiException

from connectors.base import Connector, Failed, Holding, Outgoing, Reply, Result, RetryAfter, Sent

MAX_IMPORT_PROFILES = 10_000
MAX_IMPORT_BYTES = 4_500_000  # Klaviyo's limit is 5 MB; leave room for the envelope.
MAX_BULK_EVENTS = 1_000
MAX_LIST_ADD = 1_000
# Consent channel → (Klaviyo profile attribute, payload key).
CHANNEL_ID = {"email": ("email", "email"), "sms": ("phone_number", "phone")}
# Rate-limit key (connectors/ratelimit.py) → SDK API group and method.
ENDPOINTS = {
    "profile-import": ("Profiles", "create_or_update_profile_with_http_info"),
    "profile-bulk-import-jobs": ("Profiles", "bulk_import_profiles_with_http_info"),
    "profile-bulk-import-job": ("Profiles", "get_bulk_import_profiles_job_with_http_info"),
    "profile-bulk-import-job-errors": ("Profiles", "get_errors_for_bulk_import_profiles_job_with_http_info"),
    "events": ("Events", "create_event_with_http_info"),
    "event-bulk-create-jobs": ("Events", "bulk_create_events_with_http_info"),
    "profile-subscription-bulk-create-jobs": ("Profiles", "bulk_subscribe_profiles_with_http_info"),
    "profile-subscription-bulk-delete-jobs": ("Profiles",
                                              "bulk_unsubscribe_profiles_with_http_info"),
    "list-relationships": ("Lists", "add_profiles_to_list_with_http_info"),
    # Compliance: Request Profile Deletion (POST /api/data-privacy-deletion-jobs).
    "data-privacy-deletion-jobs": ("Data_Privacy", "request_profile_deletion_with_http_info"),
    # The consent drift report: Get Profiles (GET /api/profiles).
    "profiles": ("Profiles", "get_profiles_with_http_info"),
}
# Consent state → (endpoint, profiles per request, job type, consent value).
CONSENT_JOBS = {
    "subscribed": ("profile-subscription-bulk-create-jobs", 1_000,
                   "profile-subscription-bulk-create-job", "SUBSCRIBED"),
    "unsubscribed": ("profile-subscription-bulk-delete-jobs", 100,
                     "profile-subscription-bulk-delete-job", "UNSUBSCRIBED"),
}
# Seconds between reads of an unfinished import job: short first (small jobs finish fast),
# then at most one read a second per job (the endpoint's steady limit is 150/m).
JOB_POLLS = (0.05, 0.1, 0.2, 0.5, 1.0)
FINISHED = ("complete", "cancelled", "unreadable")  # no use reading the job again
ERRORS_PAGE = 100  # the most import errors Klaviyo lists per page
# A bulk request refused for some of its rows is sent again without them at most this many
# times: each time the refusal (its message cut to the attempt log's length) names a few.
MAX_RESENDS = 5
# An error's pointer at one row of a bulk request, as klaviyo_message keeps it.
ROW_POINTER = re.compile(r"\(at /data/attributes/(?P<rows>[a-z-]+)/data/(?P<row>\d+)[^)]*\)$")
PROFILES_PAGE = 100  # the most profiles Get Profiles lists per page
_NAMES = {"email": "email", "phone": "phone_number", "first_name": "first_name",
          "last_name": "last_name"}


def klaviyo_message(body: str | None) -> str | None:
    """Klaviyo's `errors[].detail`, joined, each naming the row of a bulk request it refuses
    ("Invalid email address (at /data/attributes/profiles/data/4/attributes/email)"); the raw
    body when it is not JSON:API."""
    try:
        errors = json.loads(body or "")["errors"]
        return "; ".join(_error_text(e) for e in errors) or body
    except (ValueError, KeyError, TypeError, AttributeError):
        return body


def _error_text(error: dict) -> str:
    words = error.get("detail") or error.get("title") or ""
    pointer = (error.get("source") or {}).get("pointer") or ""
    return f"{words} (at {pointer})" if ROW_POINTER.search(f"(at {pointer})") else words


def refused_rows(message: str | None, rows: str) -> dict[int, str]:
    """{row: Klaviyo's words} for each row of the bulk request's `rows` collection (profiles,
    events-bulk-create) that a refusal names; an error the cut left unfinished is not read."""
    found: dict[int, str] = {}
    for text in (message or "").split("; "):
        named = ROW_POINTER.search(text)
        if named and named["rows"] == rows:
            found.setdefault(int(named["row"]), text[:named.start()].strip())
    return found


def _error_id(body: str | None) -> str | None:
    try:
        return json.loads(body or "")["errors"][0]["id"]
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _identity(payload: dict, *names: str) -> dict:
    """Profile identifiers and names present in a payload, under Klaviyo's attribute names."""
    return {_NAMES[n]: payload[n] for n in names if payload.get(n)}


def _who(payload: dict) -> dict:
    return {"data": {"type": "profile", "attributes": _identity(payload, "email", "phone")}}


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class KlaviyoConnector(Connector):
    name = "klaviyo"
    max_batch = MAX_IMPORT_PROFILES
    settings_keys = ("KLAVIYO_API_KEY", "KLAVIYO_BASE_URL")
    kinds = ("profile", "event", "consent", "erase")
    needs = ("email", "phone")
    # Mapping options: a list per stage; batches of at least `bulk_from` profiles or events
    # go through the bulk endpoints; a list that consent subscribes add to, per channel.
    options = {"stage_lists": {}, "bulk_from": 10, "consent_lists": {}}
    timeout = 15.0
    transport_errors = (urllib3.exceptions.HTTPError,)
    refusals = (ApiException,)
    # Wait up to 4 s for 2,000 due deliveries, so profiles go in bulk imports, not one by one:
    # at 250 changes/s and more that is at most one call per 1,000 changes.
    linger = (4.0, 2_000)
    job_wait = 5.0  # seconds a push waits for its bulk import jobs to finish
    sleep = staticmethod(time.sleep)

    def __init__(self, settings, field_map=None, limiter=None):
        super().__init__(settings, field_map, limiter)
        # max_retries=0: the outbox retries with backoff and logs every attempt.
        self.api = KlaviyoAPI(settings.KLAVIYO_API_KEY, max_retries=0,
                              test_host=settings.KLAVIYO_BASE_URL.rstrip("/"),
                              options={USE_DICTIONARY_FOR_RESPONSE_DATA: True})
        groups = {name: getattr(self.api, name)
                  for name in ("Profiles", "Events", "Lists", "Data_Privacy")}
        self.methods = {key: _unvalidated(getattr(groups[group], method))
                        for key, (group, method) in ENDPOINTS.items()}
        for group in groups.values():
            _pass_built_bodies(group.api_client)
        self.mapping = self.field_map

    def push_batch(self, items: list[Outgoing]) -> dict[int, Result]:
        results: dict[int, Result] = {}
        pushes = {"profile": self._profiles, "event": self._events, "consent": self._consent,
                  "erase": self._erase}
        for kind, push in pushes.items():
            batch = [i for i in items if i.kind == kind]
            if batch:
                results.update(push(batch))
        return results

    def _call(self, endpoint: str, *args, **params) -> tuple[Result, object]:
        """One SDK call under the endpoint's rate limit; (Result, response data)."""
        args = [_Built(arg) if type(arg) is dict else arg for arg in args]
        method = self.methods[endpoint]
        return self.call(endpoint, lambda: method(*args, **params, _request_timeout=self.timeout))

    def reply(self, answer) -> Reply:
        return Reply(answer.status_code, answer.headers, data=answer.data)

    def message(self, body) -> str | None:
        return klaviyo_message(body)

    def request_id(self, reply: Reply) -> str | None:
        # Klaviyo names a refused request by the id of its first error.
        return _error_id(reply.body) if reply.body else None

    # Profiles -----------------------------------------------------------------------

    def _profile(self, payload: dict, unset: bool = False) -> dict:
        """A profile resource; with `unset`, empty properties are removed at Klaviyo
        (Create or Update Profile's `meta.patch_properties.unset`), not sent as null."""
        fields = self.mapping["fields"]
        attributes = _identity(payload, "email", "phone", "first_name", "last_name")
        properties = {fields[k]: v for k, v in payload["fields"].items() if fields.get(k)}
        profile = {"type": "profile", "attributes": attributes}
        empty = [name for name, value in properties.items() if value is None] if unset else []
        if empty:
            properties = {k: v for k, v in properties.items() if v is not None}
            profile["meta"] = {"patch_properties": {"unset": empty}}
        attributes["properties"] = properties
        return profile

    def _stage_list(self, item: Outgoing) -> str | None:
        return self.mapping["stage_lists"].get(item.payload["fields"].get("stage"))

    def _profiles(self, items: list[Outgoing]) -> dict[int, Result]:
        # Bulk Import Profiles cannot clear a property ("does not support setting fields to
        # null"): https://developers.klaviyo.com/en/docs/use_klaviyos_bulk_profile_import_api
        clearing = [i for i in items if i.payload.get("cleared")]
        if len(items) - len(clearing) < self.mapping["bulk_from"]:
            return self._profiles_one_by_one(items)
        results = self._profiles_one_by_one(clearing) if clearing else {}
        items = [i for i in items if not i.payload.get("cleared")]
        by_list: dict[str | None, list[Outgoing]] = {}
        for item in items:
            by_list.setdefault(self._stage_list(item), []).append(item)
        jobs: dict[str, tuple[list[Outgoing], Result]] = {}  # job id → its deliveries, the 202
        for list_id, group in by_list.items():
            for chunk, built in self._import_chunks(group):
                profile_of = {i.delivery_id: profile for i, profile in zip(chunk, built)}

                def job_of(rows, list_id=list_id, profile_of=profile_of):
                    job = {"type": "profile-bulk-import-job", "attributes": {
                        "profiles": {"data": [profile_of[i.delivery_id] for (i,) in rows]}}}
                    if list_id:
                        job["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
                    return {"data": job}

                result, data, rows, refused = self._send_rows("profile-bulk-import-jobs", [[i] for i in chunk],
                                                              job_of, "profiles")
                results.update(refused)
                chunk = [i for (i,) in rows]
                if isinstance(result, Sent) and data:
                    result.request_id = data["data"]["id"]
                    jobs[result.request_id] = (chunk, result)
                else:
                    results.update({i.delivery_id: result for i in chunk})
        results.update(self._import_outcomes(jobs))
        return results

    def _import_outcomes(self, jobs: dict[str, tuple[list[Outgoing], Result]]) -> dict[int, Result]:
        """Wait up to `job_wait` for the accepted import jobs (Get Bulk Import Profiles Job),
        then read each finished one's import errors; one Result per delivery."""
        results: dict[int, Result] = {}
        status = dict.fromkeys(jobs, "queued")
        failed: dict[str, int | None] = {}  # job id → its failed_count once read
        refused: dict[str, Result] = {}  # job id → Klaviyo's refusal to show it (a key without profiles:read)
        deadline = time.monotonic() + self.job_wait
        wait = JOB_POLLS[0]
        for poll in itertools.count(1):
            pending = [job_id for job_id, state in status.items() if state not in FINISHED]
            if not pending or time.monotonic() + wait > deadline:
                break
            self.sleep(wait)
            wait = JOB_POLLS[min(poll, len(JOB_POLLS) - 1)]
            for job_id in pending:
                read, data = self._call("profile-bulk-import-job", job_id)
                if isinstance(read, Sent) and data:
                    status[job_id] = data["data"]["attributes"]["status"]
                    failed[job_id] = data["data"]["attributes"].get("failed_count")
                elif isinstance(read, RetryAfter):  # throttled or down: read again after its wait
                    wait = max(wait, read.seconds)
                else:
                    status[job_id], refused[job_id] = "unreadable", read
        for job_id, (chunk, accepted) in jobs.items():
            if status[job_id] == "complete":
                # A finished job counts the profiles it refused (`failed_count`, Get Bulk Import
                # Profiles Job: https://developers.klaviyo.com/en/reference/get_bulk_import_profiles_job):
                # with none, its errors need no read. The count is nullable: unknown, read them.
                if failed.get(job_id) == 0:
                    results.update({i.delivery_id: Sent(http_status=accepted.http_status, request_id=job_id,
                                                        latency_ms=accepted.latency_ms) for i in chunk})
                else:
                    results.update(self._import_errors(job_id, chunk, accepted))
                continue
            if job_id in refused:
                failed = Failed(http_status=refused[job_id].http_status, request_id=job_id,
                                message=f"Klaviyo accepted import job {job_id} but refused to show its "
                                        f"outcome: {refused[job_id].message}")
                results.update({i.delivery_id: failed for i in chunk})
                continue
            state = "was cancelled" if status[job_id] == "cancelled" else \
                f"still {status[job_id]}, not finished in {self.job_wait:g} s"
            retry = RetryAfter(seconds=self.job_wait, http_status=accepted.http_status, request_id=job_id,
                               latency_ms=accepted.latency_ms,
                               message=f"Klaviyo import job {job_id} {state}: sent again")
            results.update({i.delivery_id: retry for i in chunk})
        return results

    def _import_errors(self, job_id: str, chunk: list[Outgoing], accepted: Result) -> dict[int, Result]:
        """Failed with Klaviyo's words for each profile the finished job refused (Get Errors for
        Bulk Import Profiles Job, every page), Sent for the others."""
        refused: dict[int, str] = {}
        cursor = None
        while True:
            params = {"page_size": ERRORS_PAGE, **({"page_cursor": cursor} if cursor else {})}
            read, data = self._call("profile-bulk-import-job-errors", job_id, **params)
            if not isinstance(read, Sent):  # applied, but which ones failed is unknown: resend all
                return {i.delivery_id: read for i in chunk}
            for error in data.get("data") or []:
                item = _refused_item(error["attributes"], chunk)
                if item is not None:
                    refused[item.delivery_id] = error["attributes"].get("detail") or error["attributes"].get("title")
            cursor = _next_cursor(data)
            if cursor is None:
                break
        common = {"http_status": accepted.http_status, "latency_ms": accepted.latency_ms, "request_id": job_id}
        return {i.delivery_id: Failed(message=refused[i.delivery_id], **common) if i.delivery_id in refused
                else Sent(**common) for i in chunk}

    def _import_chunks(self, items: list[Outgoing]):
        """(items, their profiles) per bulk job: at most 10,000 profiles and 5 MB as sent."""
        chunk, built, size = [], [], 0
        for item in items:
            profile = self._profile(item.payload)
            item_size = len(json.dumps(profile))
            if chunk and (len(chunk) >= MAX_IMPORT_PROFILES or size + item_size > MAX_IMPORT_BYTES):
                yield chunk, built
                chunk, built, size = [], [], 0
            chunk.append(item)
            built.append(profile)
            size += item_size
        if chunk:
            yield chunk, built

    def _profiles_one_by_one(self, items: list[Outgoing]) -> dict[int, Result]:
        results, to_list = {}, {}
        for item in items:
            result, data = self._call("profile-import", {"data": self._profile(item.payload, unset=True)})
            results[item.delivery_id] = result
            list_id = self._stage_list(item)
            if isinstance(result, Sent) and list_id and data:
                to_list.setdefault(list_id, []).append((item, data["data"]["id"]))
        for list_id, members in to_list.items():
            for chunk in _chunks(members, MAX_LIST_ADD):
                body = {"data": [{"type": "profile", "id": profile_id} for _, profile_id in chunk]}
                result, _ = self._call("list-relationships", list_id, body)
                if not isinstance(result, Sent):  # the profile update is resent with the list add
                    results.update({item.delivery_id: result for item, _ in chunk})
        return results

    # Events -------------------------------------------------------------------------

    def _event_attributes(self, payload: dict) -> dict:
        metric = {"data": {"type": "metric", "attributes": {"name": payload["name"]}}}
        attributes = {"properties": payload.get("properties") or {}, "metric": metric,
                      "unique_id": payload["unique_id"]}
        if payload.get("time"):
            attributes["time"] = payload["time"]
        if payload.get("history"):
            attributes["backfill"] = True  # recorded on the timeline, flows not started
        return attributes

    def _events(self, items: list[Outgoing]) -> dict[int, Result]:
        results = {}
        if len(items) < self.mapping["bulk_from"]:
            for item in items:
                attributes = {**self._event_attributes(item.payload), "profile": _who(item.payload)}
                event = {"data": {"type": "event", "attributes": attributes}}
                results[item.delivery_id], _ = self._call("events", event)
            return results
        for chunk in _unique_chunks(items, MAX_BULK_EVENTS):
            per_profile: dict[object, list[Outgoing]] = {}
            for item in chunk:
                who = item.payload.get("subscriber_id") or item.payload.get("email")
                per_profile.setdefault(who, []).append(item)
            result, _, rows, refused = self._send_rows("event-bulk-create-jobs", list(per_profile.values()),
                                                       self._events_job, "events-bulk-create")
            results.update(refused)
            results.update({i.delivery_id: result for group in rows for i in group})
        return results

    def _events_job(self, groups: list[list[Outgoing]]) -> dict:
        """Bulk Create Events' body: one entry per profile, with its events."""
        entries = [{"type": "event-bulk-create", "attributes": {
            "profile": _who(group[0].payload),
            "events": {"data": [{"type": "event", "attributes": self._event_attributes(i.payload)}
                                for i in group]},
        }} for group in groups]
        return {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": entries}}}}

    def _send_rows(self, endpoint: str, rows: list[list[Outgoing]], body_of, collection: str):
        """Send a bulk request of `rows` (each the deliveries one row of `collection` carries).
        A refusal naming rows fails their deliveries with Klaviyo's words, and the others are
        sent again (MAX_RESENDS times at most). (the last Result and data, the rows it was for,
        {delivery id: Failed} of the rows refused on their own)."""
        refused: dict[int, Result] = {}
        for attempt in itertools.count():
            result, data = self._call(endpoint, body_of(rows))
            named = refused_rows(result.message, collection) if isinstance(result, Failed) else {}
            named = {row: words for row, words in named.items() if row < len(rows)}
            if not named or attempt == MAX_RESENDS:
                return result, data, rows, refused
            for row, words in named.items():
                refused.update({i.delivery_id: Failed(http_status=result.http_status, request_id=result.request_id,
                                                      latency_ms=result.latency_ms, message=words or result.message)
                                for i in rows[row]})
            rows = [group for row, group in enumerate(rows) if row not in named]
            if not rows:
                return None, None, [], refused

    # Consent ------------------------------------------------------------------------

    def _consent(self, items: list[Outgoing]) -> dict[int, Result]:
        results = {}
        groups: dict[tuple[str, str, bool], list[Outgoing]] = {}
        for item in items:
            key = (item.payload["channel"], item.payload["state"], bool(item.payload.get("history")))
            groups.setdefault(key, []).append(item)
        for (channel, state, history), group in groups.items():
            endpoint, size, _, _ = CONSENT_JOBS[state]
            for chunk in _chunks(group, size):
                def job_of(rows, channel=channel, state=state, history=history):
                    return self._consent_job(channel, state, [i for (i,) in rows], history)

                result, _, rows, refused = self._send_rows(endpoint, [[i] for i in chunk], job_of, "profiles")
                results.update(refused)
                results.update({i.delivery_id: result for (i,) in rows})
        return results

    def _consent_job(self, channel: str, state: str, items: list[Outgoing], history: bool = False) -> dict:
        _, _, job_type, consent = CONSENT_JOBS[state]
        attribute, key = CHANNEL_ID[channel]
        profiles = []
        for item in items:
            marketing = {"consent": consent}
            if state == "subscribed" and history:
                marketing["consented_at"] = _past(item.payload["consented_at"])
            attributes = {attribute: item.payload[key],
                          "subscriptions": {channel: {"marketing": marketing}}}
            profiles.append({"type": "profile", "attributes": attributes})
        job = {"type": job_type, "attributes": {"profiles": {"data": profiles}}}
        if state == "subscribed":
            job["attributes"]["custom_source"] = "Subscription hub"
            if history:
                job["attributes"]["historical_import"] = True
        list_id = self.mapping["consent_lists"].get(channel)
        if list_id:
            job["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
        return {"data": job}

    # Reading consent back (the drift report) ----------------------------------------

    def consent_page(self, cursor: str | None = None) -> tuple[Result, list[Holding], str | None]:
        """One page of profiles with their email and SMS marketing consent, and the cursor of
        the next page (None on the last). Get Profiles with additional-fields[profile]=
        subscriptions, 100 a page, under its 75/s and 750/m limits:
        https://developers.klaviyo.com/en/reference/get_profiles"""
        params = {"additional_fields_profile": ["subscriptions"], "page_size": PROFILES_PAGE}
        if cursor:
            params["page_cursor"] = cursor
        result, data = self._call("profiles", **params)
        if not isinstance(result, Sent):
            return result, [], cursor
        held = []
        for profile in data.get("data") or []:
            attributes = profile.get("attributes") or {}
            subscriptions = attributes.get("subscriptions") or {}
            for channel, (attribute, _) in CHANNEL_ID.items():
                marketing = (subscriptions.get(channel) or {}).get("marketing") or {}
                who = attributes.get(attribute)
                if not who or not marketing:
                    continue
                # NEVER_SUBSCRIBED and UNSUBSCRIBED both mean no marketing to this person.
                state = "subscribed" if marketing.get("consent") == "SUBSCRIBED" else "unsubscribed"
                since = marketing.get("consent_timestamp") or marketing.get("last_updated")
                held.append(Holding(channel, who.lower() if channel == "email" else who, state,
                                    str(since) if since else None, profile.get("id")))
        return result, held, _next_cursor(data)

    # Erase (compliance) -------------------------------------------------------------

    def _erase(self, items: list[Outgoing]) -> dict[int, Result]:
        """Request Profile Deletion per identifier of the person (one identifier per call;
        a phone-only profile is deleted too). Klaviyo deletes asynchronously; a profile it
        does not have is nothing to delete, so 404 counts as done."""
        results = {}
        for item in items:
            result: Result = Sent(message="no identifier: nothing to delete")
            for key in ("email", "phone"):
                if not item.payload.get(key):
                    continue
                result, _ = self._call("data-privacy-deletion-jobs", _deletion_job(key, item.payload[key]))
                if result.http_status == 404:
                    result = Sent(http_status=404, latency_ms=result.latency_ms,
                                  request_id=result.request_id, message="no such profile in Klaviyo")
                if not isinstance(result, Sent):
                    break  # retried as a whole: deleting twice is harmless
            results[item.delivery_id] = result
        return results


def _refused_item(error: dict, chunk: list[Outgoing]) -> Outgoing | None:
    """The delivery an import error names: by the profile index in its `source.pointer`
    (/data/attributes/profiles/data/<i>/...), else by the email or phone number in its
    `original_payload`."""
    parts = ((error.get("source") or {}).get("pointer") or "").split("/")
    if parts[:5] == ["", "data", "attributes", "profiles", "data"] and len(parts) > 5 and parts[5].isdigit():
        index = int(parts[5])
        if index < len(chunk):
            return chunk[index]
    sent = error.get("original_payload") or {}
    sent = sent.get("attributes", sent)
    for item in chunk:
        if (sent.get("email") and sent["email"] == item.payload.get("email")) or (
                sent.get("phone_number") and sent["phone_number"] == item.payload.get("phone")):
            return item
    return None


def _next_cursor(page: dict) -> str | None:
    """`page[cursor]` of the page after this one (from `links.next`), None on the last."""
    following = (page.get("links") or {}).get("next")
    if not following:
        return None
    return (parse_qs(urlsplit(following).query).get("page[cursor]") or [None])[0]


def _deletion_job(key: str, value: str) -> dict:
    """Request Profile Deletion's body: exactly one identifier (Klaviyo refuses two)."""
    who = {"email": value} if key == "email" else {"phone_number": value}
    return {"data": {"type": "data-privacy-deletion-job", "attributes": {
        "profile": {"data": {"type": "profile", "attributes": who}}}}}


class _Built(dict):
    """A request body built in this module, of JSON values only (dicts, lists, strings,
    numbers, booleans, None): nothing in it for the SDK to convert."""


def _pass_built_bodies(api_client) -> None:
    """Bodies built here go to the SDK's json.dumps as they are.

    Before that, the SDK copies every body value by value, converting models, dates and
    enums that these bodies do not hold: a fifth of the CPU of pushing a 10,000-profile
    import. Anything else it is given is still converted as before.
    """
    convert = api_client.sanitize_for_serialization
    if getattr(convert, "passes_built", False):
        return

    def sanitize(obj):
        return obj if type(obj) is _Built else convert(obj)

    sanitize.passes_built = True
    api_client.sanitize_for_serialization = sanitize


def _unvalidated(method):
    """The SDK method without pydantic re-validating the body into its models.

    That step costs about 0.1 ms per profile (a second for a 10,000-profile import) and
    adds nothing: the bodies are built here to Klaviyo's schemas, which the tests check
    against Klaviyo's OpenAPI documents. Serialization, auth and host stay the SDK's.
    """
    raw = getattr(method, "raw_function", None)
    return method if raw is None else functools.partial(raw, method.__self__)


def _past(value: str) -> str:
    """The consent time, a second in the past at the latest (Klaviyo refuses future times)."""
    at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    latest = datetime.now(timezone.utc) - timedelta(seconds=1)
    return min(at, latest).isoformat()


def _unique_chunks(items: list[Outgoing], size: int) -> list[list[Outgoing]]:
    """Chunks of at most `size` in which no unique_id appears twice."""
    chunks: list[tuple[list[Outgoing], set]] = []
    for item in items:
        uid = item.payload["unique_id"]
        for chunk, seen in chunks:
            if len(chunk) < size and uid not in seen:
                break
        else:
            chunk, seen = [], set()
            chunks.append((chunk, seen))
        chunk.append(item)
        seen.add(uid)
    return [chunk for chunk, _ in chunks]
