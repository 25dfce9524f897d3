"""ActiveCampaign (API v3 over requests): contacts synced by email, custom field values, tags,
and a list whose status follows marketing consent.

The hub's fields are custom contact fields (created when missing). The stage is also a
tag ("Hub stage: loyal"), swapped when the stage moves; a trigger is a tag
("Hub: Payment Failed") removed and added again, so "tag added" automations start every
time it fires. ActiveCampaign mails only a list's active subscribers, so email consent given
or withdrawn at the source sets the contact's status on the configured list (`list_id`):
subscribed or unsubscribed. ActiveCampaign has no batch contact endpoint, so each delivery is
a few calls under the account's 5 requests per second.
"""
from __future__ import annotations

import json

import requests

from connectors.base import Connector, Holding, Outgoing, Result, Sent
from hub.events import STAGES


def activecampaign_message(text: str) -> str:
    """ActiveCampaign's `errors[].title` or `message`; the raw text otherwise."""
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict) and body.get("errors"):
        return "; ".join(str(e.get("title") or e.get("detail") or e) for e in body["errors"])
    if isinstance(body, dict) and body.get("message"):
        return str(body["message"])
    return text


ABOUT = "Set by the subscription hub"
# Consent state → contactList status (1 active, 2 unsubscribed).
# https://developers.activecampaign.com/reference/update-list-status-for-contact
LIST_STATUS = {"subscribed": 1, "unsubscribed": 2}
# Payload key → ActiveCampaign contact key.
CONTACT_KEYS = {"first_name": "firstName", "last_name": "lastName", "phone": "phone"}


def _text(value) -> str:
    return "" if value is None else str(value)


class ActiveCampaignConnector(Connector):
    name = "activecampaign"
    max_batch = 50  # a few calls each at 5/s: a batch takes under a minute
    settings_keys = ("ACTIVECAMPAIGN_URL", "ACTIVECAMPAIGN_API_KEY")
    kinds = ("profile", "event", "consent", "erase")
    needs = ("email",)
    # Mapping options: tag names for the stage and for triggers (empty: no tag); the list
    # whose status follows email consent (empty: consent is not sent).
    options = {"stage_tag": "Hub stage: {stage}", "trigger_tag": "Hub: {trigger}", "list_id": None}
    timeout = 15.0
    transport_errors = (requests.RequestException,)
    request_id_header = "X-Request-Id"
    slow = True  # 5 requests a second, one contact or more each

    def __init__(self, settings, field_map=None, limiter=None):
        super().__init__(settings, field_map, limiter)
        self.mapping = self.field_map
        self.base = settings.ACTIVECAMPAIGN_URL.rstrip("/") + "/api/3"
        self.http = requests.Session()
        self.http.headers.update({"Api-Token": settings.ACTIVECAMPAIGN_API_KEY,
                                  "Accept": "application/json"})
        self._fields: dict[str, str] | None = None  # perstag → field id
        self._unlinked: set[str] = set()  # fields made but not yet shown on every list
        self._tags: dict[str, str] = {}  # tag name → tag id
        self._searched: set[str] = set()
        self.created: list[str] = []  # what `install()` (or a first push) created

    @classmethod
    def takes_consent(cls, mapping: dict, channel: str) -> bool:
        return channel == "email" and bool(mapping["list_id"])

    def close(self) -> None:
        self.http.close()

    def _request(self, method: str, path: str, body: dict | None = None, params: dict | None = None
                 ) -> tuple[Result, dict | None]:
        """One call under the account's rate limit; (Result, JSON body when 2xx)."""
        return self.call("api", lambda: self.http.request(method, self.base + path, json=body,
                                                          params=params, timeout=self.timeout))

    def message(self, body) -> str | None:
        return activecampaign_message(body)

    def push_batch(self, items: list[Outgoing]) -> dict[int, Result]:
        push = {"profile": self._profile, "event": self._event, "consent": self._consent,
                "erase": self._erase}
        return self.one_by_one(items, lambda item: push[item.kind](item.payload))

    # Contacts and fields -----------------------------------------------------------

    def _sync(self, payload: dict, field_values: list[dict] | None = None
              ) -> tuple[Result, str | None]:
        contact = {"email": payload["email"]}
        for attr, key in CONTACT_KEYS.items():
            if payload.get(attr):
                contact[key] = payload[attr]
        if field_values:
            contact["fieldValues"] = field_values
        result, body = self._request("POST", "/contact/sync", {"contact": contact})
        return result, (body or {}).get("contact", {}).get("id")

    def _listed_fields(self) -> tuple[Result | None, dict | None]:
        """perstag → id of every field of the account (GET /fields, page by page)."""
        found, offset = {}, 0
        while True:
            page_at = {"limit": 100, "offset": offset}
            result, body = self._request("GET", "/fields", params=page_at)
            if body is None:
                return result, None
            page = body.get("fields", [])
            found.update({f["perstag"].upper(): str(f["id"]) for f in page if f.get("perstag")})
            offset += len(page)
            if not page or offset >= int((body.get("meta") or {}).get("total", offset)):
                return None, found

    def _field_ids(self) -> tuple[Result | None, dict | None]:
        """perstag → id of every mapped field, creating the missing ones."""
        if self._fields is None:
            failure, self._fields = self._listed_fields()
            if failure is not None:
                return failure, None
        for name in filter(None, self.mapping["fields"].values()):
            if name.upper() in self._fields:
                continue
            # `descript` is ActiveCampaign's key for a field's description
            # (https://developers.activecampaign.com/reference/contact-custom-fields-api-guide).
            result, body = self._request("POST", "/fields", {"field": {
                "type": "text", "title": name, "perstag": name.upper(), "descript": ABOUT}})
            if body is None and result.http_status == 422:
                # Made since the listing (another worker's first push beside this one):
                # ActiveCampaign refuses its perstag again, and the field it names is ours.
                failure, listed = self._listed_fields()
                if failure is None and name.upper() in listed:
                    self._fields.update(listed)
                    continue
            if body is None:
                return result, None
            field_id = str(body["field"]["id"])
            # Known from now on even if linking it fails: creating it again would be refused
            # for good ("The perstag is already in use") and dead-letter every later profile.
            self._fields[name.upper()] = field_id
            self._unlinked.add(field_id)
            self.created.append(f"field {name}")
        for field_id in sorted(self._unlinked):
            # relid 0: the field is shown for contacts of every list.
            result, rel = self._request("POST", "/fieldRels", {"fieldRel": {"field": field_id, "relid": 0}})
            if rel is None:
                return result, None
            self._unlinked.discard(field_id)
        return None, self._fields

    def install(self) -> list[str]:
        """Create the mapped custom fields and the stage tags when missing, and check that the
        consent list exists; returns what was created ("field hub_stage", "tag Hub stage: new", …)."""
        self.created = []
        failure, _ = self._field_ids()
        if failure is not None:
            raise RuntimeError(f"ActiveCampaign fields not created: {failure.message}")
        if self.mapping["stage_tag"]:
            family = self.mapping["stage_tag"].split("{")[0]
            for stage in STAGES:
                failure, _ = self._tag_id(self.mapping["stage_tag"].format(stage=stage), family)
                if failure is not None:
                    raise RuntimeError(f"ActiveCampaign tags not created: {failure.message}")
        if self.mapping["list_id"]:
            result, found = self._request("GET", f"/lists/{self.mapping['list_id']}")
            if found is None:
                raise RuntimeError(f"ActiveCampaign list {self.mapping['list_id']} (list_id in "
                                   f"mappings/activecampaign.yaml): {result.message}")
        return self.created

    def _profile(self, payload: dict) -> Result:
        with self.preparing():  # fields made and linked are kept: a held profile loses none
            failure, ids = self._field_ids()
        if ids is None:
            return failure
        fields = self.mapping["fields"]
        values = [{"field": ids[fields[k].upper()], "value": _text(v)}
                  for k, v in payload["fields"].items() if fields.get(k)]
        result, contact_id = self._sync(payload, values)
        stage = payload["fields"].get("stage")
        if not isinstance(result, Sent) or not stage or not self.mapping["stage_tag"]:
            return result
        prefix = self.mapping["stage_tag"].split("{")[0]
        tag = self.mapping["stage_tag"].format(stage=stage)
        return self._swap_tag(contact_id, tag, prefix) or result

    # Tags ------------------------------------------------------------------------

    def _tag_id(self, name: str, search: str) -> tuple[Result | None, str | None]:
        """The id of tag `name`, created when missing; `search` lists its family once a process."""
        if name not in self._tags and search not in self._searched:
            result, body = self._request("GET", "/tags", params={"search": search, "limit": 100})
            if body is None:
                return result, None
            self._tags.update({t["tag"]: str(t["id"]) for t in body.get("tags", [])})
            self._searched.add(search)
        if name not in self._tags:
            result, body = self._request("POST", "/tags", {"tag": {
                "tag": name, "tagType": "contact", "description": ABOUT}})
            if body is None and result.http_status == 422:
                # Made since the search, by another worker: found by name this time.
                _, listed = self._request("GET", "/tags", params={"search": name, "limit": 100})
                self._tags.update({t["tag"]: str(t["id"]) for t in (listed or {}).get("tags", [])})
                if name in self._tags:
                    return None, self._tags[name]
            if body is None:
                return result, None
            self._tags[name] = str(body["tag"]["id"])
            self.created.append(f"tag {name}")
        return None, self._tags[name]

    def _swap_tag(self, contact_id: str, name: str, family: str | None = None) -> Result | None:
        """Tag the contact with `name` afresh, dropping other tags of the `family` prefix.

        Returns the failed call's Result, or None when all went well."""
        failure, tag_id = self._tag_id(name, family or name)
        if tag_id is None:
            return failure
        result, body = self._request("GET", f"/contacts/{contact_id}/contactTags")
        if body is None:
            return result
        family_ids = {i for n, i in self._tags.items() if family and n.startswith(family)}
        for link in body.get("contactTags", []):
            tag = str(link.get("tag"))
            if tag == tag_id and family:
                return None  # already wears its stage tag
            if tag == tag_id or tag in family_ids:
                result, gone = self._request("DELETE", f"/contactTags/{link['id']}")
                if gone is None:
                    return result
        link = {"contactTag": {"contact": contact_id, "tag": tag_id}}
        result, added = self._request("POST", "/contactTags", link)
        return None if added is not None else result

    def _event(self, payload: dict) -> Result:
        if not self.mapping["trigger_tag"]:
            return Sent(message="no trigger_tag in mappings/activecampaign.yaml: nothing to send")
        result, contact_id = self._sync(payload)
        if not isinstance(result, Sent):
            return result
        tag = self.mapping["trigger_tag"].format(trigger=payload["name"])
        return self._swap_tag(contact_id, tag) or result

    # Consent ------------------------------------------------------------------------

    def _consent(self, payload: dict) -> Result:
        """The contact's status on the configured list follows the consent given or withdrawn."""
        if not self.takes_consent(self.mapping, payload["channel"]):
            return Sent(message="no list_id in mappings/activecampaign.yaml or not email consent: "
                                "nothing to send")
        result, contact_id = self._sync(payload)
        if not isinstance(result, Sent):
            return result
        link = {"contactList": {"list": str(self.mapping["list_id"]), "contact": contact_id,
                                "status": LIST_STATUS[payload["state"]]}}
        result, _ = self._request("POST", "/contactLists", link)
        return result

    # Reading consent back (the drift report) ----------------------------------------

    def subscribed_page(self, offset: int = 0) -> tuple[Result, list[Holding], int | None]:
        """One page (100) of the consent list's active subscribers and the offset of the next
        page (None on the last): GET /api/3/contacts?listid=…&status=1 ("List all contacts",
        `listid` and `status` filters, `limit`/`offset` paging), under the account's 5/s.
        https://developers.activecampaign.com/reference/list-all-contacts"""
        params = {"listid": str(self.mapping["list_id"]), "status": 1, "limit": 100, "offset": offset}
        result, body = self._request("GET", "/contacts", params=params)
        if body is None:
            return result, [], offset
        contacts = body.get("contacts") or []
        held = [Holding("email", str(c["email"]).lower(), "subscribed", ref=str(c["id"]))
                for c in contacts if c.get("email")]
        offset += len(contacts)
        total = int((body.get("meta") or {}).get("total") or offset)
        return result, held, (offset if contacts and offset < total else None)

    def list_status(self, contact_id: str, email: str) -> tuple[Result, Holding | None]:
        """The contact's status on the consent list and since when (its subscribe or unsubscribe
        date): GET /api/3/contacts/{id}/contactLists.
        https://developers.activecampaign.com/reference/retrieve-contact-list-memberships"""
        result, body = self._request("GET", f"/contacts/{contact_id}/contactLists")
        if body is None:
            return result, None
        link = next((c for c in body.get("contactLists") or []
                     if str(c.get("list")) == str(self.mapping["list_id"])), None)
        if link is None:
            return result, Holding("email", email, "unsubscribed", ref=contact_id)
        active = str(link.get("status")) == str(LIST_STATUS["subscribed"])
        since = link.get("sdate") if active else link.get("udate")
        return result, Holding("email", email, "subscribed" if active else "unsubscribed", since or None,
                               contact_id)

    # Erase (compliance) -------------------------------------------------------------

    def _erase(self, payload: dict) -> Result:
        """Find the contact by email and DELETE /api/3/contacts/{id}; none found is done."""
        if not payload.get("email"):
            return Sent(message="no email: ActiveCampaign holds contacts by email only")
        result, body = self._request("GET", "/contacts", params={"email": payload["email"]})
        if body is None:
            return result
        ids = [str(c["id"]) for c in body.get("contacts", [])
               if str(c.get("email", "")).lower() == payload["email"].lower()]
        if not ids:
            return Sent(http_status=result.http_status, latency_ms=result.latency_ms,
                        message="no such contact in ActiveCampaign")
        for contact_id in ids:
            result, gone = self._request("DELETE", f"/contacts/{contact_id}")
            if gone is None and result.http_status != 404:
                return result
        return Sent(http_status=result.http_status, latency_ms=result.latency_ms,
                    request_id=result.request_id, message=f"{len(ids)} contact(s) deleted")
