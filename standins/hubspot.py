"""A loopback stand-in of HubSpot's CRM v3 API (contacts batch upsert/read, contact properties,
GDPR delete) and of its communication preferences v3 API (subscribe/unsubscribe by email).

HubSpot publishes no openly licensed OpenAPI document, so the request shapes checked here
are those of hubspot-api-client's own models (BatchInputSimplePublicObjectBatchInputUpsert:
`inputs[]` of `idProperty`, `id`, `properties`; at most 100 inputs; unique ids) and the
answers are HubSpot's documented ones: 200/207 batch responses, errors with `message`,
`category` and `correlationId`, and an `X-HubSpot-Correlation-Id` header. It holds the app to
100 requests per rolling 10 seconds: past it, a 429 that names the policy and carries the
`X-HubSpot-RateLimit-*` headers but no `Retry-After` (`refusal`).

    with FakeHubSpot(token="pat-test") as hubspot:
        settings.HUBSPOT_BASE_URL = hubspot.url
        hubspot.contacts["a@example.com"]["lifecyclestage"]
        hubspot.subscriptions[("a@example.com", FakeHubSpot.MARKETING)]  # "SUBSCRIBED" / "NOT_SUBSCRIBED"
"""
from __future__ import annotations

import json
import re
import uuid
from datetime import datetime, timezone
from urllib.parse import unquote

from standins.loopback import Call, LoopbackServer, RollingLimit

STANDARD_PROPERTIES = {"email", "firstname", "lastname", "phone", "lifecyclestage", "hs_object_id"}
HUB_PROPERTIES = {"hub_stage", "hub_health_score", "hub_tier", "hub_points", "hub_subscription_status",
                  "hub_subscription_source", "hub_plan", "hub_mrr", "hub_next_renewal_at", "hub_lifetime_value"}
# The legal bases HubSpot accepts when a subscription status changes.
LEGAL_BASES = {"CONSENT_WITH_NOTICE", "LEGITIMATE_INTEREST_CLIENT", "LEGITIMATE_INTEREST_OTHER",
               "LEGITIMATE_INTEREST_PQL", "NON_GDPR", "PERFORMANCE_OF_CONTRACT", "PROCESS_AND_STORE"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# HubSpot's eight default lifecycle stages, by internal value: the only values `lifecyclestage`
# takes, unless the account edited its stages (https://developers.hubspot.com/docs/api/CRM/Contacts;
# customized lifecycle stages, HubSpot changelog 2022-09-30).
LIFECYCLE_STAGES = {"subscriber": "Subscriber", "lead": "Lead", "marketingqualifiedlead": "Marketing Qualified Lead",
                    "salesqualifiedlead": "Sales Qualified Lead", "opportunity": "Opportunity",
                    "customer": "Customer", "evangelist": "Evangelist", "other": "Other"}


class FakeHubSpot(LoopbackServer):
    ROUTES = [
        ("POST", r"/crm/v3/objects/contacts/batch/upsert", "upsert"),
        ("POST", r"/crm/v3/objects/contacts/batch/read", "read"),
        ("GET", r"/crm/v3/properties/contacts", "get_properties"),
        ("POST", r"/crm/v3/properties/contacts", "create_property"),
        ("POST", r"/crm/v3/objects/contacts/gdpr-delete", "gdpr_delete"),
        ("GET", r"/crm/v3/properties/contacts/groups", "get_groups"),  # `hub install`
        ("POST", r"/crm/v3/properties/contacts/groups", "create_group"),
        ("POST", r"/communication-preferences/v3/subscribe", "subscribe"),
        ("POST", r"/communication-preferences/v3/unsubscribe", "unsubscribe"),
        ("GET", r"/communication-preferences/v3/definitions", "definitions"),
        ("GET", r"/communication-preferences/v3/status/email/(?P<email>[^/]+)", "email_status"),
    ]
    MARKETING = "7061839"  # id of the account's one subscription type ("Marketing Information")

    def __init__(self, token: str = "pat-test", installed: bool = True, rate_limited: bool = True,
                 burst: int = 100, lifecycle_stages: dict[str, str] | None = None):
        super().__init__()
        self.token = token
        self.lifecycle_stages = dict(LIFECYCLE_STAGES if lifecycle_stages is None else lifecycle_stages)
        # Private apps on Free and Starter: a burst limit of 100 requests per 10 seconds, 190
        # on Professional and Enterprise (`burst`)
        # (https://developers.hubspot.com/docs/developer-tooling/platform/usage-guidelines),
        # rolling; a 429 past it names the policy TEN_SECONDLY_ROLLING (error_body).
        self.limit = RollingLimit(burst, 10.0) if rate_limited else None
        self.properties = set(STANDARD_PROPERTIES) | (HUB_PROPERTIES if installed else set())
        self.contacts: dict[str, dict] = {}  # email → properties
        self.ids: dict[str, str] = {}
        self.gdpr_deleted: list[str] = []  # objectId of every GDPR delete request
        self.groups = {"contactinformation"}  # property groups (HubSpot's default one)
        self.blocked: set[str] = set()  # emails a GDPR delete blocklisted
        self.subscription_types = {self.MARKETING: "Marketing Information"}
        self.subscriptions: dict[tuple[str, str], str] = {}  # (email, subscription id) → status

    def error_body(self, status: int, message: str, category: str | None = None) -> dict:
        categories = {400: "VALIDATION_ERROR", 401: "INVALID_AUTHENTICATION", 404: "OBJECT_NOT_FOUND",
                      409: "CONFLICT", 429: "RATE_LIMITS"}
        body = {"status": "error", "message": message, "correlationId": str(uuid.uuid4()),
                "category": category or categories.get(status, "ERROR")}
        if status == 429:
            body["policyName"] = "TEN_SECONDLY_ROLLING"
        return body

    def authorized(self, call: Call) -> bool:
        return call.headers.get("Authorization") == f"Bearer {self.token}"

    @property
    def throttled(self) -> int:
        """Requests refused with 429 for the burst limit."""
        return self.limit.throttled if self.limit else 0

    def _answer(self, call, fault):
        status, document, headers = super()._answer(call, fault)
        correlation = (document or {}).get("correlationId") if isinstance(document, dict) else None
        headers = {**headers, "X-HubSpot-Correlation-Id": correlation or str(uuid.uuid4())}
        if self.limit and fault is None:
            with self.lock:
                left = self.limit.remaining()
            headers.update({"X-HubSpot-RateLimit-Max": str(self.limit.count),
                            "X-HubSpot-RateLimit-Remaining": str(left),
                            "X-HubSpot-RateLimit-Interval-Milliseconds": str(int(self.limit.span * 1000))})
        return status, document, headers

    def refusal(self, wait: float) -> tuple[int, object, dict]:
        # HubSpot documents no Retry-After on its 429s (usage guidelines and error handling
        # pages), and its own SDK waits by the body's policyName instead (hubspot-api-nodejs,
        # src/services/decorators/RetryDecorator.ts: 10 s for TEN_SECONDLY_ROLLING). The body
        # is a real refusal's (hubspot-api-python issue #117).
        return 429, {**self.error_body(429, "You have reached your ten_secondly_rolling limit."),
                     "errorType": "RATE_LIMIT"}, {}

    def _contact(self, email: str) -> dict:
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        return {"id": self.ids[email], "properties": {**self.contacts[email], "hs_object_id": self.ids[email]},
                "createdAt": now, "updatedAt": now, "archived": False}

    def upsert(self, call):
        body = call.body or {}
        inputs = body.get("inputs")
        if not isinstance(inputs, list) or set(body) - {"inputs"}:
            return 400, self.error_body(400, "Invalid input JSON on line 1: expected `inputs`")
        if len(inputs) > 100:
            return 400, self.error_body(400, "Batch input is limited to 100 inputs.")
        ids = [i.get("id") for i in inputs]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            return 400, self.error_body(400, f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique")
        for item in inputs:
            if (set(item) - {"idProperty", "id", "properties", "objectWriteTraceId"}
                    or item.get("idProperty") != "email"):
                return 400, self.error_body(400, f"Invalid input: {json.dumps(item)[:200]}")
            unknown = sorted(set(item.get("properties") or {}) - self.properties)
            if unknown:
                problems = [{"isValid": False, "message": f'Property "{p}" does not exist',
                             "error": "PROPERTY_DOESNT_EXIST", "name": p} for p in unknown]
                return 400, self.error_body(400, f"Property values were not valid: {json.dumps(problems)}")
            if not all(isinstance(v, str) for v in item["properties"].values()):
                return 400, self.error_body(400, "Property values must be strings")
        # One contact HubSpot refuses stops the whole batch: 400 with the property validation
        # results (INVALID_EMAIL names the address); nothing in the batch is written. HubSpot's
        # batch documentation says so; the v3 reference lists no per-input answer for it.
        # https://developers.hubspot.com/docs/api-reference/legacy/crm-contacts-v1/delete-contacts-v1-contact-batch
        # The validation result's shape is the one HubSpot answers for an invalid email elsewhere
        # ({"isValid": false, "message": "Email address … is invalid", "error": "INVALID_EMAIL"}).
        invalid = [{"isValid": False, "message": f"Email address {i['id']} is invalid",
                    "error": "INVALID_EMAIL", "name": "email"}
                   for i in inputs if not EMAIL.match(str(i.get("id") or ""))]
        # An enumeration takes only its options' values: INVALID_OPTION, as integrations record
        # HubSpot's answer ("… was not one of the allowed options: [labels]").
        labels = f"[{', '.join(self.lifecycle_stages.values())}]"
        invalid += [{"isValid": False, "message": f"{stage} was not one of the allowed options: {labels}",
                     "error": "INVALID_OPTION", "name": "lifecyclestage"}
                    for i in inputs if (stage := (i.get("properties") or {}).get("lifecyclestage"))
                    and stage not in self.lifecycle_stages]
        if invalid:
            return 400, self.error_body(400, f"Property values were not valid: {json.dumps(invalid)}")
        results = []
        for item in inputs:
            email = item["id"]
            new = email not in self.contacts
            self.ids.setdefault(email, str(100 + len(self.ids)))
            self.contacts.setdefault(email, {"email": email}).update(item["properties"])
            results.append({**self._contact(email), "new": new})
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        return 200, {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now}

    def read(self, call):
        body = call.body or {}
        if body.get("idProperty") != "email" or not isinstance(body.get("inputs"), list):
            return 400, self.error_body(400, "Invalid input JSON: expected idProperty and inputs")
        found = [i["id"] for i in body["inputs"] if i["id"] in self.contacts]
        missing = [i["id"] for i in body["inputs"] if i["id"] not in self.contacts]
        wanted = set(body.get("properties") or []) | {"hs_object_id"}
        results = [{**c, "properties": {k: v for k, v in c["properties"].items() if k in wanted}}
                   for c in (self._contact(e) for e in found)]
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        document = {"status": "COMPLETE", "results": results, "startedAt": now, "completedAt": now}
        if not missing:
            return 200, document
        document.update(numErrors=1, errors=[{
            "status": "error", "category": "OBJECT_NOT_FOUND",
            "message": "Could not get some CONTACT objects, they may be deleted or not exist. "
                       "Check that ids are valid.",
            "context": {"ids": missing}}])
        return 207, document

    def get_properties(self, call):
        results = [{"name": p, "label": p, "type": "string", "fieldType": "text", "groupName": "contactinformation"}
                   for p in sorted(self.properties)]
        for found in results:
            if found["name"] == "lifecyclestage":
                found.update(label="Lifecycle Stage", type="enumeration", fieldType="radio", options=[
                    {"label": label, "value": value, "displayOrder": n, "hidden": False}
                    for n, (value, label) in enumerate(self.lifecycle_stages.items())])
        return 200, {"results": results}

    def create_property(self, call):
        body = call.body or {}
        missing = [k for k in ("name", "label", "type", "fieldType", "groupName") if not body.get(k)]
        if missing:
            return 400, self.error_body(400, f"Missing required fields: {missing}")
        if body["groupName"] not in self.groups:
            return 400, self.error_body(400, f"Property group {body['groupName']} does not exist.")
        if body["name"] in self.properties:
            return 409, self.error_body(409, f"Property named '{body['name']}' already exists.")
        self.properties.add(body["name"])
        return 201, {**body, "hidden": False, "formField": False}

    def get_groups(self, call):
        return 200, {"results": [{"name": g, "label": g, "displayOrder": -1, "archived": False}
                                 for g in sorted(self.groups)]}

    def create_group(self, call):
        body = call.body or {}
        if not body.get("name") or not body.get("label"):
            return 400, self.error_body(400, "Missing required fields: name, label")
        if body["name"] in self.groups:
            return 409, self.error_body(409, f"Property group '{body['name']}' already exists.")
        self.groups.add(body["name"])
        return 201, {"displayOrder": -1, **body, "archived": False}

    def gdpr_delete(self, call):
        """POST /crm/v3/objects/contacts/gdpr-delete (PublicGdprDeleteInput): 204. By email, an
        address HubSpot has no contact for is blocklisted all the same (204); an unknown record
        id is 404.
        https://developers.hubspot.com/docs/api-reference/legacy/crm/objects/contacts/gdpr/gdpr-delete-contact"""
        body = call.body or {}
        if not body.get("objectId") or set(body) - {"objectId", "idProperty"} \
                or body.get("idProperty") not in (None, "email", "hs_object_id"):
            return 400, self.error_body(400, "Invalid input JSON: expected objectId and idProperty")
        self.gdpr_deleted.append(body["objectId"])
        email = body["objectId"] if body.get("idProperty") == "email" else next(
            (e for e, i in self.ids.items() if i == body["objectId"]), None)
        if body.get("idProperty") == "email":
            self.blocked.add(body["objectId"])
        if email is None and body.get("idProperty") != "email":
            return 404, self.error_body(404, "resource not found")
        self.contacts.pop(email, None)
        for key in [k for k in self.subscriptions if k[0] == email]:
            del self.subscriptions[key]
        return 204, None

    # Communication preferences v3 ---------------------------------------------------

    def _status_change(self, call, status: str):
        """PublicUpdateSubscriptionStatusRequest: emailAddress, subscriptionId, legalBasis
        (required where GDPR is on), legalBasisExplanation.
        https://developers.hubspot.com/docs/api-reference/communication-preferences-subscriptions-v3/status/post-communication-preferences-v3-subscribe"""
        body = call.body or {}
        email, subscription = body.get("emailAddress"), str(body.get("subscriptionId") or "")
        if not email or not subscription or set(body) - {"emailAddress", "subscriptionId", "legalBasis",
                                                         "legalBasisExplanation"}:
            return 400, self.error_body(400, "Invalid input JSON: expected emailAddress and subscriptionId")
        if body.get("legalBasis") is not None and body["legalBasis"] not in LEGAL_BASES:
            return 400, self.error_body(400, f"Invalid legalBasis {body['legalBasis']!r}")
        if not EMAIL.match(email):
            return 400, self.error_body(400, f"Email address {email} is invalid")
        if subscription not in self.subscription_types:
            return 400, self.error_body(400, f"Subscription {subscription} does not exist")
        # v3 subscribes an address to a type but will not resubscribe one who opted out (v4 can).
        # https://developers.hubspot.com/docs/api-reference/legacy/communication-preferences/v3/guide
        if status == "SUBSCRIBED" and self.subscriptions.get((email, subscription)) == "NOT_SUBSCRIBED":
            return 400, self.error_body(400, f"{email} has opted out of subscription {subscription} "
                                             "and cannot be resubscribed through this API")
        # A change to the status the address already has is refused, as HubSpot answers it:
        # 400 VALIDATION_ERROR "<email> is already subscribed to subscription <id>" (or
        # "already unsubscribed from"), recorded by integrations that met it (e.g. the example
        # response in a subscribeContact client, and a Mailchimp-to-HubSpot sync that treats it
        # as done); the API reference documents no such case.
        if self.subscriptions.get((email, subscription)) == status:
            done = "subscribed to" if status == "SUBSCRIBED" else "unsubscribed from"
            return 400, self.error_body(400, f"{email} is already {done} subscription {subscription}")
        self.subscriptions[(email, subscription)] = status
        return 200, {"id": subscription, "name": self.subscription_types[subscription], "description": "",
                     "status": status, "sourceOfStatus": "SUBSCRIPTION_STATUS",
                     "legalBasis": body.get("legalBasis"), "legalBasisExplanation": body.get("legalBasisExplanation")}

    def definitions(self, call):
        """GET /communication-preferences/v3/definitions: the account's subscription types.
        https://developers.hubspot.com/docs/api-reference/legacy/communication-preferences/v3/guide"""
        now = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
        return 200, {"subscriptionDefinitions": [
            {"id": i, "name": n, "description": "", "purpose": "Marketing", "communicationMethod": "Email",
             "isActive": True, "isDefault": True, "isInternal": False, "createdAt": now, "updatedAt": now}
            for i, n in self.subscription_types.items()]}

    def email_status(self, call):
        """GET /communication-preferences/v3/status/email/{emailAddress}: `recipient` and the
        `subscriptionStatuses` recorded for the address (PublicSubscriptionStatusesResponse);
        a type it was never subscribed to or unsubscribed from is not listed.
        https://developers.hubspot.com/docs/api-reference/legacy/communication-preferences/v3/get-subscription"""
        email = unquote(call.params["email"])
        if not EMAIL.match(email):
            return 400, self.error_body(400, f"Email address {email} is invalid")
        statuses = [{"id": sid, "name": self.subscription_types.get(sid, ""), "description": "",
                     "status": status, "sourceOfStatus": "SUBSCRIPTION_STATUS"}
                    for (address, sid), status in self.subscriptions.items() if address == email]
        return 200, {"recipient": email, "subscriptionStatuses": statuses}

    def subscribe(self, call):
        return self._status_change(call, "SUBSCRIBED")

    def unsubscribe(self, call):
        """https://developers.hubspot.com/docs/api-reference/legacy/communication-preferences/v3/unsubscribe-contact"""
        return self._status_change(call, "NOT_SUBSCRIBED")
