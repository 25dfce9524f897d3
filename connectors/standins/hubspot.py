"""A loopback stand-in of HubSpot's CRM v3 API: contacts batch upsert/read and contact properties.

HubSpot publishes no openly licensed OpenAPI document, so the request shapes checked here
are those of hubspot-api-client's own models (BatchInputSimplePublicObjectBatchInputUpsert:
`inputs[]` of `idProperty`, `id`, `properties`; at most 100 inputs; unique ids) and the
answers are HubSpot's documented ones: 200/207 batch responses, errors with `message`,
`category` and `correlationId`, and an `X-HubSpot-Correlation-Id` header.

    with FakeHubSpot(token="pat-test") as hubspot:
        settings.HUBSPOT_BASE_URL = hubspot.url
        hubspot.contacts["a@example.com"]["lifecyclestage"]
"""
from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone

from connectors.standins.loopback import Call, LoopbackServer

STANDARD_PROPERTIES = {"email", "firstname", "lastname", "phone", "lifecyclestage", "hs_object_id"}
HUB_PROPERTIES = {"hub_stage", "hub_health_score", "hub_tier", "hub_points", "hub_subscription_status",
                  "hub_plan", "hub_mrr", "hub_next_renewal_at", "hub_lifetime_value"}


class FakeHubSpot(LoopbackServer):
    ROUTES = [
        ("POST", r"/crm/v3/objects/contacts/batch/upsert", "upsert"),
        ("POST", r"/crm/v3/objects/contacts/batch/read", "read"),
        ("GET", r"/crm/v3/properties/contacts", "get_properties"),
        ("POST", r"/crm/v3/properties/contacts", "create_property"),
        ("POST", r"/crm/v3/objects/contacts/gdpr-delete", "gdpr_delete"),
        ("GET", r"/crm/v3/properties/contacts/groups", "get_groups"),  # `hub install`
        ("POST", r"/crm/v3/properties/contacts/groups", "create_group"),
    ]

    def __init__(self, token: str = "pat-test", installed: bool = True):
        super().__init__()
        self.token = token
        self.properties = set(STANDARD_PROPERTIES) | (HUB_PROPERTIES if installed else set())
        self.contacts: dict[str, dict] = {}  # email → properties
        self.ids: dict[str, str] = {}
        self.gdpr_deleted: list[str] = []  # objectId of every GDPR delete request
        self.groups = {"contactinformation"}  # property groups (HubSpot's default one)

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

    def _answer(self, call, fault):
        status, document, headers = super()._answer(call, fault)
        correlation = (document or {}).get("correlationId") if isinstance(document, dict) else None
        return status, document, {**headers, "X-HubSpot-Correlation-Id": correlation or str(uuid.uuid4())}

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
            if set(item) - {"idProperty", "id", "properties", "objectWriteTraceId"} or item.get("idProperty") != "email":
                return 400, self.error_body(400, f"Invalid input: {json.dumps(item)[:200]}")
            unknown = sorted(set(item.get("properties") or {}) - self.properties)
            if unknown:
                problems = [{"isValid": False, "message": f'Property "{p}" does not exist',
                             "error": "PROPERTY_DOESNT_EXIST", "name": p} for p in unknown]
                return 400, self.error_body(400, f"Property values were not valid: {json.dumps(problems)}")
            if not all(isinstance(v, str) for v in item["properties"].values()):
                return 400, self.error_body(400, "Property values must be strings")
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
            "message": "Could not get some CONTACT objects, they may be deleted or not exist. Check that ids are valid.",
            "context": {"ids": missing}}])
        return 207, document

    def get_properties(self, call):
        return 200, {"results": [{"name": p, "label": p, "type": "string", "fieldType": "text",
                                  "groupName": "contactinformation"} for p in sorted(self.properties)]}

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
        """POST /crm/v3/objects/contacts/gdpr-delete (PublicGdprDeleteInput): 204, or 404."""
        body = call.body or {}
        if not body.get("objectId") or set(body) - {"objectId", "idProperty"} \
                or body.get("idProperty") not in (None, "email", "hs_object_id"):
            return 400, self.error_body(400, "Invalid input JSON: expected objectId and idProperty")
        self.gdpr_deleted.append(body["objectId"])
        email = body["objectId"] if body.get("idProperty") == "email" else next(
            (e for e, i in self.ids.items() if i == body["objectId"]), None)
        if email not in self.contacts:
            return 404, self.error_body(404, "resource not found")
        del self.contacts[email]
        return 204, None
