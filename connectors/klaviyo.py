"""Klaviyo through the official klaviyo-api SDK: profiles, events and consent.

- Profiles: create-or-update one by one for a few, bulk import jobs (≤ 10,000 profiles,
  ≤ 5 MB) for many; an optional list per stage (mapping `stage_lists`).
- Triggers: events whose `unique_id` is the trigger key, so Klaviyo drops a resend; a bulk
  request never holds one unique_id twice (Klaviyo would reject the whole request).
- Consent: only bulk subscribe / unsubscribe jobs, only for the channel the source named.
  Subscribes carry the consent's own time, which Klaviyo accepts only with
  `historical_import` (the person already opted in on the source: no second opt-in mail).
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import urllib3
from klaviyo_api import KlaviyoAPI
from openapi_client.api_arg_options import USE_DICTIONARY_FOR_RESPONSE_DATA
from openapi_client.exceptions import ApiException

from connectors.base import Connector, Outgoing, Result, RetryAfter, Sent
from connectors.classify import Clock, classify, unreachable
from hub.errors import RetryLater

MAX_IMPORT_PROFILES = 10_000
MAX_IMPORT_BYTES = 4_500_000  # Klaviyo's limit is 5 MB; leave room for the envelope.
MAX_BULK_EVENTS = 1_000
MAX_SUBSCRIBE = 1_000
MAX_UNSUBSCRIBE = 100
MAX_LIST_ADD = 1_000
CHANNEL_ID = {"email": "email", "sms": "phone_number"}


def klaviyo_message(body: str | None) -> str | None:
    """Klaviyo's `errors[].detail`, joined; the raw body when it is not JSON:API."""
    try:
        errors = json.loads(body or "")["errors"]
        return "; ".join(e.get("detail") or e.get("title") or "" for e in errors) or body
    except (ValueError, KeyError, TypeError):
        return body


def _error_id(body: str | None) -> str | None:
    try:
        return json.loads(body or "")["errors"][0]["id"]
    except (ValueError, KeyError, TypeError, IndexError):
        return None


def _identity(payload: dict, *names: str) -> dict:
    """Profile identifiers and names present in a payload, under Klaviyo's attribute names."""
    keys = {"email": "email", "phone": "phone_number", "first_name": "first_name", "last_name": "last_name"}
    return {keys[n]: payload[n] for n in names if payload.get(n)}


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class KlaviyoConnector(Connector):
    name = "klaviyo"
    max_batch = MAX_IMPORT_PROFILES
    settings_keys = ("KLAVIYO_API_KEY", "KLAVIYO_BASE_URL")
    kinds = ("profile", "event", "consent")
    needs = ("email", "phone")
    # Mapping options: a list per stage; batches of at least `bulk_from` profiles or events
    # go through the bulk endpoints; a list that consent subscribes add to, per channel.
    options = {"stage_lists": {}, "bulk_from": 10, "consent_lists": {}}
    timeout = 15.0

    def __init__(self, settings, field_map=None, limiter=None):
        super().__init__(settings, field_map, limiter)
        # max_retries=0: the outbox retries with backoff and logs every attempt.
        self.api = KlaviyoAPI(settings.KLAVIYO_API_KEY, max_retries=0,
                              test_host=settings.KLAVIYO_BASE_URL.rstrip("/"),
                              options={USE_DICTIONARY_FOR_RESPONSE_DATA: True})
        self.mapping = self.field_map

    def push_batch(self, items: list[Outgoing]) -> dict[int, Result]:
        results: dict[int, Result] = {}
        for kind, push in (("profile", self._profiles), ("event", self._events), ("consent", self._consent)):
            batch = [i for i in items if i.kind == kind]
            if batch:
                results.update(push(batch))
        return results

    def _call(self, endpoint: str, method, *args) -> tuple[Result, object]:
        """One SDK call under the endpoint's rate limit; (Result, response data)."""
        try:
            if self.limiter is not None:
                self.limiter.acquire(f"klaviyo:{endpoint}", self.mapping["rate_limits"].get(endpoint))
        except RetryLater as exc:
            return RetryAfter(seconds=exc.retry_after, message=str(exc)), None
        answer = failure = lost = None
        with Clock.timing() as clock:
            try:
                answer = method(*args, _request_timeout=self.timeout)
            except ApiException as exc:
                failure = exc
            except urllib3.exceptions.HTTPError as exc:
                lost = exc
        if lost is not None:
            return unreachable(lost, clock.ms), None
        if failure is None:
            return classify(answer.status_code, answer.headers, latency_ms=clock.ms), answer.data
        result = classify(failure.status or 0, failure.headers, klaviyo_message(failure.body),
                          clock.ms, _error_id(failure.body))
        if failure.status == 429 and self.limiter is not None:
            self.limiter.pause(f"klaviyo:{endpoint}", result.seconds)
        return result, None

    # Profiles -----------------------------------------------------------------------

    def _profile(self, payload: dict) -> dict:
        fields = self.mapping["fields"]
        properties = {fields[k]: v for k, v in payload["fields"].items() if fields.get(k)}
        attributes = {**_identity(payload, "email", "phone", "first_name", "last_name"), "properties": properties}
        return {"type": "profile", "attributes": attributes}

    def _stage_list(self, item: Outgoing) -> str | None:
        return self.mapping["stage_lists"].get(item.payload["fields"].get("stage"))

    def _profiles(self, items: list[Outgoing]) -> dict[int, Result]:
        if len(items) < self.mapping["bulk_from"]:
            return self._profiles_one_by_one(items)
        results = {}
        by_list: dict[str | None, list[Outgoing]] = {}
        for item in items:
            by_list.setdefault(self._stage_list(item), []).append(item)
        for list_id, group in by_list.items():
            for chunk in self._import_chunks(group):
                body = {"data": {"type": "profile-bulk-import-job", "attributes": {
                    "profiles": {"data": [self._profile(i.payload) for i in chunk]}}}}
                if list_id:
                    body["data"]["relationships"] = {"lists": {"data": [{"type": "list", "id": list_id}]}}
                result, _ = self._call("profile-bulk-import-jobs", self.api.Profiles.bulk_import_profiles_with_http_info, body)
                results.update({i.delivery_id: result for i in chunk})
        return results

    def _import_chunks(self, items: list[Outgoing]):
        chunk, size = [], 0
        for item in items:
            item_size = len(json.dumps(self._profile(item.payload)))
            if chunk and (len(chunk) >= MAX_IMPORT_PROFILES or size + item_size > MAX_IMPORT_BYTES):
                yield chunk
                chunk, size = [], 0
            chunk.append(item)
            size += item_size
        if chunk:
            yield chunk

    def _profiles_one_by_one(self, items: list[Outgoing]) -> dict[int, Result]:
        results, to_list = {}, {}
        for item in items:
            result, data = self._call("profile-import", self.api.Profiles.create_or_update_profile_with_http_info,
                                      {"data": self._profile(item.payload)})
            results[item.delivery_id] = result
            list_id = self._stage_list(item)
            if isinstance(result, Sent) and list_id and data:
                to_list.setdefault(list_id, []).append((item, data["data"]["id"]))
        for list_id, members in to_list.items():
            for chunk in _chunks(members, MAX_LIST_ADD):
                body = {"data": [{"type": "profile", "id": profile_id} for _, profile_id in chunk]}
                result, _ = self._call("list-relationships", self.api.Lists.add_profiles_to_list_with_http_info,
                                       list_id, body)
                if not isinstance(result, Sent):  # the profile update is resent with the list add
                    results.update({item.delivery_id: result for item, _ in chunk})
        return results

    # Events -------------------------------------------------------------------------

    def _event_attributes(self, payload: dict) -> dict:
        attributes = {"properties": payload.get("properties") or {}, "unique_id": payload["unique_id"],
                      "metric": {"data": {"type": "metric", "attributes": {"name": payload["name"]}}}}
        if payload.get("time"):
            attributes["time"] = payload["time"]
        if payload.get("history"):
            attributes["backfill"] = True  # recorded on the timeline, flows not started
        return attributes

    def _events(self, items: list[Outgoing]) -> dict[int, Result]:
        if len(items) < self.mapping["bulk_from"]:
            results = {}
            for item in items:
                attributes = self._event_attributes(item.payload)
                attributes["profile"] = {"data": {"type": "profile", "attributes": _identity(item.payload, "email", "phone")}}
                results[item.delivery_id], _ = self._call(
                    "events", self.api.Events.create_event_with_http_info, {"data": {"type": "event", "attributes": attributes}})
            return results
        results = {}
        for chunk in _unique_chunks(items, MAX_BULK_EVENTS):
            per_profile: dict[object, list[Outgoing]] = {}
            for item in chunk:
                per_profile.setdefault(item.payload.get("subscriber_id") or item.payload.get("email"), []).append(item)
            entries = [{"type": "event-bulk-create", "attributes": {
                "profile": {"data": {"type": "profile", "attributes": _identity(group[0].payload, "email", "phone")}},
                "events": {"data": [{"type": "event", "attributes": self._event_attributes(i.payload)} for i in group]},
            }} for group in per_profile.values()]
            body = {"data": {"type": "event-bulk-create-job", "attributes": {"events-bulk-create": {"data": entries}}}}
            result, _ = self._call("event-bulk-create-jobs", self.api.Events.bulk_create_events_with_http_info, body)
            results.update({i.delivery_id: result for i in chunk})
        return results

    # Consent ------------------------------------------------------------------------

    def _consent(self, items: list[Outgoing]) -> dict[int, Result]:
        results = {}
        groups: dict[tuple[str, str], list[Outgoing]] = {}
        for item in items:
            groups.setdefault((item.payload["channel"], item.payload["state"]), []).append(item)
        for (channel, state), group in groups.items():
            subscribe = state == "subscribed"
            endpoint, size = (("profile-subscription-bulk-create-jobs", MAX_SUBSCRIBE) if subscribe
                              else ("profile-subscription-bulk-delete-jobs", MAX_UNSUBSCRIBE))
            method = (self.api.Profiles.bulk_subscribe_profiles_with_http_info if subscribe
                      else self.api.Profiles.bulk_unsubscribe_profiles_with_http_info)
            for chunk in _chunks(group, size):
                body = self._consent_job(channel, subscribe, chunk)
                result, _ = self._call(endpoint, method, body)
                results.update({i.delivery_id: result for i in chunk})
        return results

    def _consent_job(self, channel: str, subscribe: bool, items: list[Outgoing]) -> dict:
        identifier = CHANNEL_ID[channel]
        profiles = []
        for item in items:
            marketing = {"consent": "SUBSCRIBED" if subscribe else "UNSUBSCRIBED"}
            if subscribe:
                marketing["consented_at"] = _past(item.payload["consented_at"])
            attributes = {identifier: item.payload["email" if channel == "email" else "phone"],
                          "subscriptions": {channel: {"marketing": marketing}}}
            profiles.append({"type": "profile", "attributes": attributes})
        job_type = "profile-subscription-bulk-create-job" if subscribe else "profile-subscription-bulk-delete-job"
        attributes = {"profiles": {"data": profiles}}
        if subscribe:
            attributes["historical_import"] = True
            attributes["custom_source"] = "Subscription hub"
        body = {"data": {"type": job_type, "attributes": attributes}}
        list_id = self.mapping["consent_lists"].get(channel)
        if list_id:
            body["data"]["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
        return body


def _past(value: str) -> str:
    """The consent time, nudged a second into the past when clocks disagree (Klaviyo refuses future times)."""
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
