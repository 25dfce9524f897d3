"""HubSpot through hubspot-api-client: batch upsert of contacts by email, marketing consent.

The hub's fields go to custom contact properties (created by `install()`, which
`hub install` calls). HubSpot's own `lifecyclestage` is only ever moved forward: the
current value is read in the same batch and a hub stage that maps to an earlier
HubSpot stage leaves it alone. HubSpot refuses a whole batch for one invalid email or one
property value it does not take (a lifecycle stage the account lacks); the contacts it
names, or that carry the value it names, fail alone and the rest are sent again. Email
consent given or withdrawn at the source subscribes or unsubscribes the address from the
mapped subscription type through the communication preferences API (v3, the version
hubspot-api-client speaks).
"""
from __future__ import annotations

import json
import re

import hubspot
import urllib3
from hubspot.communication_preferences.exceptions import ApiException as PreferencesApiException
from hubspot.crm.contacts.exceptions import ApiException as ContactsApiException
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException

from connectors.base import Connector, Failed, Holding, Outgoing, Reply, Result, Sent, truncate
from connectors.ratelimit import LIMITS, Rate
from hub.values import header

# Each HubSpot API package has its own exception class.
API_ERRORS = (ContactsApiException, PropertiesApiException, PreferencesApiException)
# How HubSpot names an address it refuses in a batch's property validation results.
INVALID_EMAIL = re.compile(r"Email address (\S+) is invalid")
# One of those results: {"isValid": false, "message": "<value> was not one of the allowed
# options: […]", "error": "INVALID_OPTION", "name": "<property>"}. The refusal's message
# lists them after "Property values were not valid: ", cut to the attempt log's length.
VALIDATION_RESULT = re.compile(r"\{[^{}]*\}")
# HubSpot's refusal of a subscription status the address already has (400 VALIDATION_ERROR,
# "<email> is already subscribed to subscription <id>" / "… already unsubscribed from …").
ALREADY = re.compile(r"is already (?:subscribed to|unsubscribed from) subscription \S+")
# HubSpot's default lifecycle stages, earliest first.
LIFECYCLE_ORDER = ["subscriber", "lead", "marketingqualifiedlead", "salesqualifiedlead",
                   "opportunity", "customer", "evangelist"]
# Property types for `install()`; anything not listed is a single-line text property.
PROPERTY_TYPES = {"health_score": "number", "points": "number", "mrr": "number",
                  "lifetime_value": "number", "next_renewal_at": "datetime"}
_FIELD_TYPE = {"number": "number", "datetime": "date", "string": "text"}
# Seconds to wait after a 429 that carries no Retry-After, by the limit its body names as
# `policyName`. HubSpot documents no Retry-After on its 429s; its own SDK waits 10 s for the
# rolling ten-second limit and 1 s for the secondly one (hubspot-api-nodejs,
# src/services/decorators/RetryDecorator.ts). The daily limit resets at midnight in the
# account's time zone, which the hub does not know
# (https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines): it asks
# again each hour, rather than spend requests that all count as errors.
POLICY_WAIT_S = {"TEN_SECONDLY_ROLLING": 10.0, "SECONDLY": 1.0, "DAILY": 3600.0}
# Payload key → HubSpot's own contact property.
CONTACT_PROPERTIES = {"email": "email", "first_name": "firstname", "last_name": "lastname",
                      "phone": "phone"}


def hubspot_message(body) -> str | None:
    """HubSpot's `message`; the raw body when it is not JSON."""
    return _error(body).get("message", body.decode() if isinstance(body, bytes) else body)


def allowed_rate(headers) -> Rate | None:
    """The burst limit HubSpot's answer says the app has: X-HubSpot-RateLimit-Max requests per
    X-HubSpot-RateLimit-Interval-Milliseconds (100 per 10 s on Free and Starter, 190 on
    Professional and Enterprise, https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines).
    None when the answer does not say: search answers carry no such headers."""
    most = header(headers, "X-HubSpot-RateLimit-Max")
    interval = header(headers, "X-HubSpot-RateLimit-Interval-Milliseconds")
    if not (most and interval and most.isdigit() and interval.isdigit() and int(most) and int(interval)):
        return None
    return Rate(int(most), int(interval) / 1000)


def _error(body) -> dict:
    """HubSpot's JSON error body; {} when it is not one. Every field of it is optional
    (https://developers.hubspot.com/docs/api-reference/error-handling)."""
    try:
        found = json.loads(body or "")
    except (ValueError, TypeError):
        return {}
    return found if isinstance(found, dict) else {}


def refused_values(message: str | None) -> list[tuple[str, str]]:
    """(property, HubSpot's words) for each value a batch refusal's message names as not
    valid, but emails (INVALID_EMAIL); a result the cut left unfinished is not read."""
    found = []
    for text in VALIDATION_RESULT.findall(message or ""):
        try:
            result = json.loads(text)
        except ValueError:
            continue
        if (isinstance(result, dict) and result.get("isValid") is False and result.get("name") not in (None, "email")
                and isinstance(result.get("message"), str)):
            found.append((result["name"], result["message"]))
    return found


def _text(value) -> str:
    # HubSpot stores every property as text; an empty string clears it.
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


class HubSpotConnector(Connector):
    name = "hubspot"
    max_batch = 1_000
    settings_keys = ("HUBSPOT_ACCESS_TOKEN", "HUBSPOT_BASE_URL")
    kinds = ("profile", "consent", "erase")
    needs = ("email",)
    # Mapping options: contacts per batch upsert (HubSpot allows 100); hub stage →
    # HubSpot lifecycle stage (only moved forward along `lifecycle_order`); the subscription
    # type email consent goes to (empty: consent is not sent) and the legal basis given.
    options = {"batch_size": 100, "lifecycle_stages": {}, "lifecycle_order": LIFECYCLE_ORDER,
               "property_group": "contactinformation", "subscription_id": None,
               "legal_basis": "CONSENT_WITH_NOTICE"}
    timeout = 15.0
    transport_errors = (urllib3.exceptions.HTTPError,)
    refusals = API_ERRORS
    request_id_header = "X-HubSpot-Correlation-Id"
    # Wait up to 1 s for a full batch upsert: HubSpot counts calls, not contacts.
    linger = (1.0, 100)
    slow = True  # 100 requests per 10 s: 1,000 contacts a second in batch upserts of 100
    allowed: Rate | None = None  # the app's limit, as HubSpot's last answer that said so gave it

    def __init__(self, settings, field_map=None, limiter=None):
        super().__init__(settings, field_map, limiter)
        # retry=False: no hidden urllib3 retries; the outbox retries and logs each attempt.
        client = hubspot.Client.create(access_token=settings.HUBSPOT_ACCESS_TOKEN,
                                       host=settings.HUBSPOT_BASE_URL.rstrip("/"), retry=False)
        self.contacts = client.crm.contacts.batch_api
        self.basic = client.crm.contacts.basic_api  # GDPR delete (compliance)
        self.preferences = client.communication_preferences.status_api
        self.definitions = client.communication_preferences.definition_api  # `install()`
        self.properties = client.crm.properties.core_api
        self.client = client  # `install()` also reaches the property groups
        self.mapping = self.field_map

    def kept_rate(self) -> Rate:
        """The pace the hub keeps to: the slowest window of mappings/hubspot.yaml
        `rate_limits.api`, else HubSpot's documented default."""
        rates = self.field_map["rate_limits"].get("api") or LIMITS["hubspot:api"]
        return min(rates, key=lambda r: r.per_second)

    @classmethod
    def takes_consent(cls, mapping: dict, channel: str) -> bool:
        return channel == "email" and bool(mapping["subscription_id"])

    def _call(self, method, **kwargs) -> tuple[Result, dict | None]:
        """One SDK call under HubSpot's account-wide limit; (Result, JSON body)."""
        def send():
            answer = method(**kwargs, _preload_content=False, _request_timeout=self.timeout)
            # The body is read within the timing, and a broken read is no answer.
            return answer, answer.data
        return self.call("api", send)

    def reply(self, sent) -> Reply:
        answer, raw = sent
        self.allowed = allowed_rate(answer.headers) or self.allowed
        return Reply(answer.status, answer.headers, data=json.loads(raw or b"{}"))

    def message(self, body) -> str | None:
        return hubspot_message(body)

    def asked_wait(self, reply: Reply) -> float:
        """Retry-After when HubSpot sends one; else the wait for the limit its 429 names. The
        ten-second window's own length is in X-HubSpot-RateLimit-Interval-Milliseconds."""
        asked = super().asked_wait(reply)
        if asked or reply.status != 429:
            return asked
        policy = _error(reply.body).get("policyName")
        window = allowed_rate(reply.headers)
        if policy in (None, "TEN_SECONDLY_ROLLING") and window is not None:
            return window.seconds
        return POLICY_WAIT_S.get(policy, 0.0)

    def push_batch(self, items: list[Outgoing]) -> dict[int, Result]:
        results: dict[int, Result] = {}
        profiles = [i for i in items if i.kind == "profile"]
        size = max(1, min(100, int(self.mapping["batch_size"])))
        for start in range(0, len(profiles), size):
            # Each batch and each single delivery begins afresh: held, not slept for, when the
            # limit has no room (after a 429, for its Retry-After).
            self._starting = True
            results.update(self._upsert(profiles[start:start + size]))
        single = {"consent": self._consent, "erase": self._gdpr_delete}
        results.update(self.one_by_one([i for i in items if i.kind in single],
                                       lambda item: single[item.kind](item.payload)))
        return results

    def _gdpr_delete(self, payload: dict) -> Result:
        """Compliance: POST /crm/v3/objects/contacts/gdpr-delete by email. HubSpot deletes the
        contact and blocklists the email, also when it has no contact for it (204 either way)."""
        if not payload.get("email"):
            return Sent(message="no email: HubSpot holds contacts by email only")
        result, _ = self._call(self.basic.purge, public_gdpr_delete_input={
            "idProperty": "email", "objectId": payload["email"]})
        return result

    def _consent(self, payload: dict) -> Result:
        """POST /communication-preferences/v3/subscribe or /unsubscribe for the mapped type.
        v3 will not resubscribe someone who opted out: HubSpot's refusal is a permanent failure."""
        if not self.takes_consent(self.mapping, payload["channel"]):
            return Sent(message="no subscription_id in mappings/hubspot.yaml or not email consent: "
                                "nothing to send")
        change = {"emailAddress": payload["email"], "subscriptionId": str(self.mapping["subscription_id"]),
                  "legalBasisExplanation": f"{payload['state']} at {payload.get('source') or 'the source'}"
                                           f" on {payload.get('consented_at') or 'an unknown date'}"}
        if self.mapping["legal_basis"]:
            change["legalBasis"] = self.mapping["legal_basis"]
        method = (self.preferences.subscribe if payload["state"] == "subscribed"
                  else self.preferences.unsubscribe)
        result, _ = self._call(method, public_update_subscription_status_request=change)
        if result.http_status == 400 and ALREADY.search(result.message or ""):
            # The address has that status already (a HubSpot form, or this change sent before
            # and its answer lost): what the delivery asked for holds.
            return Sent(http_status=result.http_status, latency_ms=result.latency_ms, request_id=result.request_id,
                        message=f"HubSpot already had this address {payload['state']}")
        return result

    def consent_status(self, email: str) -> tuple[Result, Holding | None]:
        """What HubSpot holds for the address on the mapped subscription type (None when it could
        not be read): GET /communication-preferences/v3/status/email/{emailAddress}, one call a
        person under the account's limit. A type absent from the answer was never subscribed.
        https://developers.hubspot.com/docs/api-reference/legacy/communication-preferences/v3/get-subscription"""
        result, body = self._call(self.preferences.get_email_status, email_address=email)
        if body is None:
            return result, None
        wanted = str(self.mapping["subscription_id"])
        status = next((s for s in body.get("subscriptionStatuses") or [] if str(s.get("id")) == wanted), {})
        state = "subscribed" if status.get("status") == "SUBSCRIBED" else "unsubscribed"
        return result, Holding("email", email.lower(), state)

    def _upsert(self, chunk: list[Outgoing]) -> dict[int, Result]:
        current = {}
        if self.mapping["lifecycle_stages"]:
            result, current = self._lifecycle_stages([i.payload["email"] for i in chunk])
            if current is None:
                return {i.delivery_id: result for i in chunk}
        inputs = [{"idProperty": "email", "id": i.payload["email"],
                   "properties": self._properties(i.payload, current.get(i.payload["email"]))}
                  for i in chunk]
        batch = {"inputs": inputs}
        result, body = self._call(self.contacts.upsert,
                                  batch_input_simple_public_object_batch_input_upsert=batch)
        refused = {}
        if result.http_status == 400:
            refused = {m.group(1): m.group(0) for m in INVALID_EMAIL.finditer(result.message or "")}
            # A value HubSpot does not take is refused in every contact carrying it: HubSpot's
            # words begin with the value.
            for prop, words in refused_values(result.message):
                refused.update({item.payload["email"]: words for item, sent in zip(chunk, inputs)
                                if (value := sent["properties"].get(prop)) and words.startswith(f"{value} ")})
        if set(refused) & {i.payload["email"] for i in chunk}:
            return self._without_invalid(chunk, refused, result)
        results = {i.delivery_id: result for i in chunk}
        # 207: some inputs failed; each error names the ids it concerns.
        for error in (body or {}).get("errors", []):
            context = error.get("context") or {}
            ids = context.get("ids") or context.get("id") or []
            failed = Failed(http_status=result.http_status, latency_ms=result.latency_ms,
                            request_id=result.request_id, message=truncate(error.get("message")))
            results.update({i.delivery_id: failed for i in chunk if i.payload["email"] in ids})
        return results

    def _without_invalid(self, chunk: list[Outgoing], refused: dict[str, str], answer: Result
                         ) -> dict[int, Result]:
        """HubSpot refused the whole batch for the contacts in `refused` (email → its words):
        those fail with its message for them, the others are upserted again without them."""
        results = {i.delivery_id: Failed(http_status=answer.http_status, latency_ms=answer.latency_ms,
                                         request_id=answer.request_id, message=refused[i.payload["email"]])
                   for i in chunk if i.payload["email"] in refused}
        rest = [i for i in chunk if i.payload["email"] not in refused]
        return {**results, **(self._upsert(rest) if rest else {})}

    def _properties(self, payload: dict, current_stage: str | None) -> dict:
        fields = self.mapping["fields"]
        properties = {fields[k]: _text(v) for k, v in payload["fields"].items() if fields.get(k)}
        for attr, prop in CONTACT_PROPERTIES.items():
            if payload.get(attr):
                properties[prop] = payload[attr]
        target = self.mapping["lifecycle_stages"].get(payload["fields"].get("stage"))
        if target and _forward(self.mapping["lifecycle_order"], current_stage, target):
            properties["lifecyclestage"] = target
        return properties

    def _lifecycle_stages(self, emails: list[str]) -> tuple[Result, dict | None]:
        """email → current lifecyclestage; contacts HubSpot does not have yet are left out."""
        query = {"idProperty": "email", "inputs": [{"id": e} for e in emails],
                 "properties": ["email", "lifecyclestage"]}
        result, body = self._call(self.contacts.read,
                                  batch_read_input_simple_public_object_id=query)
        if body is None:
            return result, None
        found = [r.get("properties") or {} for r in body.get("results", [])]
        return result, {p.get("email"): p.get("lifecyclestage") for p in found}

    def install(self) -> list[str]:
        """Create the property group and the custom contact properties the mapping names when
        missing, and check that the consent subscription type exists; returns what was created
        ("group x", property names)."""
        self._check_subscription()
        created = self._install_group()
        result, body = self._call(self.properties.get_all, object_type="contacts")
        if body is None:
            raise RuntimeError(f"HubSpot properties could not be read: {result.message}")
        existing = {p["name"] for p in body.get("results", [])}
        for field, prop in self.mapping["fields"].items():
            if not prop or prop in existing:
                continue
            kind = PROPERTY_TYPES.get(field, "string")
            result, _ = self._call(self.properties.create, object_type="contacts", property_create={
                "name": prop, "label": prop.replace("_", " ").title(), "type": kind,
                "fieldType": _FIELD_TYPE[kind], "groupName": self.mapping["property_group"]})
            if result.outcome != "sent":
                raise RuntimeError(f"HubSpot property {prop} not created: {result.message}")
            created.append(prop)
        return created

    def _check_subscription(self) -> None:
        wanted = self.mapping["subscription_id"]
        if not wanted:
            return
        result, body = self._call(self.definitions.get_page)
        if body is None:
            raise RuntimeError(f"HubSpot subscription types could not be read: {result.message}")
        known = {str(d.get("id")): d.get("name") for d in body.get("subscriptionDefinitions", [])}
        if str(wanted) not in known:
            raise RuntimeError(f"HubSpot has no subscription type {wanted} (subscription_id in "
                               f"mappings/hubspot.yaml); it has: "
                               + ", ".join(f"{i} {n}" for i, n in known.items()))

    def _install_group(self) -> list[str]:
        group = self.mapping["property_group"]
        groups = self.client.crm.properties.groups_api
        result, body = self._call(groups.get_all, object_type="contacts")
        if body is None:
            raise RuntimeError(f"HubSpot property groups could not be read: {result.message}")
        if any(g.get("name") == group for g in body.get("results", [])):
            return []
        result, _ = self._call(groups.create, object_type="contacts", property_group_create={
            "name": group, "label": group.replace("_", " ").title(), "displayOrder": -1})
        if result.outcome != "sent":
            raise RuntimeError(f"HubSpot property group {group} not created: {result.message}")
        return [f"group {group}"]


def _forward(order: list[str], current: str | None, target: str) -> bool:
    """True when `target` is later than `current` in `order` (or nothing is set yet)."""
    if not current:
        return True
    if current not in order or target not in order:
        return False  # a stage the hub does not know (e.g. "other" or a custom one): leave it
    return order.index(target) > order.index(current)
