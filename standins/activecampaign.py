"""A loopback stand-in of ActiveCampaign's API v3: contact sync, custom fields, tags, list status.

Checks the `Api-Token` header, answers in ActiveCampaign's shapes ({"contact": {...}},
{"fields": [...], "meta": {"total": "n"}}, 422 with `errors[].title`, 403/404 with
`message`), holds the account to 5 requests a second (429 with Retry-After past it) and
records every call.

    with FakeActiveCampaign(api_key="ac-test") as ac:
        settings.ACTIVECAMPAIGN_URL = ac.url
        ac.contact("a@example.com"), ac.tags_of("a@example.com"), ac.field_values("a@example.com")
        ac.list_status("a@example.com", "1"), ac.mailable("a@example.com")
"""
from __future__ import annotations

from datetime import datetime, timezone

from standins.loopback import Call, LoopbackServer, RollingLimit

# What POST /fields keeps of a field (besides its id).
FIELD_KEYS = frozenset({"title", "type", "descript", "perstag", "defval", "visible", "service", "ordernum",
                        "isrequired", "show_in_list", "rows", "cols"})


class FakeActiveCampaign(LoopbackServer):
    ROUTES = [
        ("POST", r"/api/3/contact/sync", "sync"),
        ("GET", r"/api/3/fields", "list_fields"),
        ("POST", r"/api/3/fields", "create_field"),
        ("POST", r"/api/3/fieldRels", "create_field_rel"),
        ("GET", r"/api/3/tags", "list_tags"),
        ("POST", r"/api/3/tags", "create_tag"),
        ("GET", r"/api/3/contacts/(?P<id>\d+)/contactTags", "list_contact_tags"),
        ("POST", r"/api/3/contactTags", "add_contact_tag"),
        ("DELETE", r"/api/3/contactTags/(?P<id>\d+)", "remove_contact_tag"),
        ("GET", r"/api/3/contacts", "list_contacts"),
        ("GET", r"/api/3/contacts/(?P<id>\d+)/contactLists", "list_contact_lists"),
        ("DELETE", r"/api/3/contacts/(?P<id>\d+)", "delete_contact"),
        ("POST", r"/api/3/contactLists", "update_list_status"),
        ("GET", r"/api/3/lists/(?P<id>\d+)", "get_list"),
    ]

    def __init__(self, api_key: str = "ac-test", lists: tuple[str, ...] = ("1",), rate_limited: bool = True):
        super().__init__()
        self.api_key = api_key
        # "Our API has a rate limit of 5 requests per second per account. When you exceed the
        # number of requests we allow, we will respond with a 429 Too Many Requests response"
        # with Retry-After, RateLimit-Limit and RateLimit-Remaining headers
        # (https://developers.activecampaign.com/reference/rate-limits). Counted here as the
        # requests arrive, in any one second.
        self.limit = RollingLimit(5, 1.0) if rate_limited else None
        self.lists = set(lists)  # list ids of the account
        self.memberships: dict[tuple[str, str], int] = {}  # (contact id, list id) → status
        self.membership_dates: dict[tuple[str, str], dict] = {}  # (contact id, list id) → sdate, udate
        self.contacts: dict[str, dict] = {}  # id → contact
        self.values: dict[tuple[str, str], str] = {}  # (contact id, field id) → value
        self.fields: dict[str, dict] = {}
        self.tags: dict[str, dict] = {}
        self.contact_tags: dict[str, dict] = {}
        self.added_tags: list[tuple[str, str]] = []  # (email, tag name), every time one is added
        self.deleted: list[str] = []  # emails of contacts deleted
        self._next = 1

    def set_up(self, names) -> None:
        """The custom fields `names` made beforehand, as `hub install` leaves an account
        (text fields, perstag the name in capitals), without a request."""
        for name in filter(None, names):
            field_id = self._id()
            self.fields[field_id] = {"id": field_id, "type": "text", "title": name, "perstag": name.upper()}

    def _id(self) -> str:
        self._next += 1
        return str(self._next)

    def error_body(self, status: int, message: str) -> dict:
        if status == 422:
            return {"errors": [{"title": message, "detail": "", "code": "invalid",
                                "source": {"pointer": "/data/attributes"}}]}
        return {"message": message}

    def authorized(self, call: Call) -> bool:
        return call.headers.get("Api-Token") == self.api_key

    @property
    def throttled(self) -> int:
        """Requests refused with 429 for the rate limit."""
        return self.limit.throttled if self.limit else 0

    def _answer(self, call, fault):
        status, document, headers = super()._answer(call, fault)
        if status == 401:  # ActiveCampaign answers a bad token with 403
            return 403, {"message": "You are not authorized to access this resource"}, headers
        if self.limit and fault is None:
            with self.lock:
                left = self.limit.remaining()
            headers = {**headers, "RateLimit-Limit": str(self.limit.count), "RateLimit-Remaining": str(left)}
        return status, document, headers

    # Contacts -----------------------------------------------------------------------

    def sync(self, call):
        contact = (call.body or {}).get("contact") or {}
        email = contact.get("email") or ""
        if "@" not in email:
            return 422, self.error_body(422, "Contact Email is not valid.")
        found = next((c for c in self.contacts.values() if c["email"] == email), None)
        created = found is None
        if created:
            found = {"id": self._id(), "email": email}
            self.contacts[found["id"]] = found
        found.update({k: v for k, v in contact.items() if k in ("firstName", "lastName", "phone")})
        values = []
        for fv in contact.get("fieldValues") or []:
            if str(fv.get("field")) not in self.fields:
                return 422, self.error_body(422, f"Field {fv.get('field')} does not exist")
            self.values[(found["id"], str(fv["field"]))] = fv.get("value")
            values.append({"contact": found["id"], "field": str(fv["field"]), "value": fv.get("value")})
        return (201 if created else 200), {"fieldValues": values, "contact": found}

    def list_contacts(self, call):
        """GET /api/3/contacts: filtered by `email` (exactly that address), `listid` and `status`
        (the status on that list: 1 active, 2 unsubscribed; -1 any), `limit` (default 20, at
        most 100) contacts from `offset`; `meta.total` counts every match.
        https://developers.activecampaign.com/reference/list-all-contacts"""
        email = call.query.get("email", [None])[0]
        list_id = call.query.get("listid", [None])[0]
        status = int(call.query.get("status", ["-1"])[0])
        limit = min(100, int(call.query.get("limit", ["20"])[0]))
        offset = int(call.query.get("offset", ["0"])[0])
        found = [c for c in self.contacts.values() if email is None or c["email"].lower() == email.lower()]
        if list_id is not None:
            found = [c for c in found if (c["id"], list_id) in self.memberships
                     and status in (-1, self.memberships[(c["id"], list_id)])]
        return 200, {"contacts": found[offset:offset + limit], "meta": {"total": str(len(found))}}

    def list_contact_lists(self, call):
        """GET /api/3/contacts/{id}/contactLists: the contact's list memberships, each with its
        status and subscribe (`sdate`) and unsubscribe (`udate`) dates.
        https://developers.activecampaign.com/reference/retrieve-contact-list-memberships"""
        contact = call.params["id"]
        if contact not in self.contacts:
            return 404, {"message": f"No Result found for Subscriber with id {contact}"}
        links = [{"contact": contact, "list": list_id, "status": str(status),
                  **self.membership_dates.get((contact, list_id), {"sdate": None, "udate": None})}
                 for (c, list_id), status in self.memberships.items() if c == contact]
        return 200, {"contactLists": links}

    def delete_contact(self, call):
        contact = self.contacts.pop(call.params["id"], None)
        if contact is None:
            return 404, {"message": f"No Result found for Subscriber with id {call.params['id']}"}
        self.deleted.append(contact["email"])
        self.memberships = {k: v for k, v in self.memberships.items() if k[0] != call.params["id"]}
        for link_id in [i for i, ct in self.contact_tags.items() if ct["contact"] == call.params["id"]]:
            del self.contact_tags[link_id]
        return 200, {}

    # Lists --------------------------------------------------------------------------

    def get_list(self, call):
        """GET /api/3/lists/{id}: {"list": {...}}.
        https://developers.activecampaign.com/reference/retrieve-all-lists (one list: /lists/{id})"""
        if call.params["id"] not in self.lists:
            return 404, {"message": f"No Result found for List with id {call.params['id']}"}
        return 200, {"list": {"id": call.params["id"], "name": "Email Subscription",
                              "stringid": "email-subscription"}}

    def update_list_status(self, call):
        """POST /api/3/contactLists {"contactList": {"list", "contact", "status"}}: status 1
        subscribes (active), 2 unsubscribes; 2 → 1 re-subscribes someone who had unsubscribed.
        https://developers.activecampaign.com/reference/update-list-status-for-contact"""
        link = (call.body or {}).get("contactList") or {}
        contact, list_id = str(link.get("contact")), str(link.get("list"))
        if contact not in self.contacts:
            return 404, {"message": f"No Result found for Subscriber with id {contact}"}
        if list_id not in self.lists:
            return 404, {"message": f"No Result found for List with id {list_id}"}
        if str(link.get("status")) not in ("1", "2"):
            return 422, self.error_body(422, "Status must be 1 (active) or 2 (unsubscribed)")
        status = int(link["status"])
        self.memberships[(contact, list_id)] = status
        dates = self.membership_dates.setdefault((contact, list_id), {"sdate": None, "udate": None})
        dates["sdate" if status == 1 else "udate"] = datetime.now(timezone.utc).isoformat()
        return 200, {"contacts": [self.contacts[contact]],
                     "contactList": {"contact": contact, "list": list_id, "status": status}}

    # Fields -------------------------------------------------------------------------

    def list_fields(self, call):
        limit = int(call.query.get("limit", ["20"])[0])
        offset = int(call.query.get("offset", ["0"])[0])
        page = list(self.fields.values())[offset:offset + limit]
        return 200, {"fields": page, "meta": {"total": str(len(self.fields))}}

    def create_field(self, call):
        field = (call.body or {}).get("field") or {}
        if not field.get("title") or not field.get("type"):
            return 422, self.error_body(422, "Field title and type are required")
        if any(f["perstag"] == field.get("perstag") for f in self.fields.values()):
            return 422, self.error_body(422, "The perstag is already in use")
        # Keys the API does not name are not kept: a description is `descript`
        # (https://developers.activecampaign.com/reference/contact-custom-fields-api-guide,
        # "Create a Custom Field": title, type, descript, perstag, defval, visible…).
        created = {**{k: v for k, v in field.items() if k in FIELD_KEYS}, "id": self._id()}
        self.fields[created["id"]] = created
        return 201, {"field": created}

    def create_field_rel(self, call):
        rel = (call.body or {}).get("fieldRel") or {}
        if str(rel.get("field")) not in self.fields:
            return 422, self.error_body(422, "Field does not exist")
        return 201, {"fieldRel": {**rel, "id": self._id()}}

    # Tags ---------------------------------------------------------------------------

    def list_tags(self, call):
        search = call.query.get("search", [""])[0].lower()
        found = [t for t in self.tags.values() if search in t["tag"].lower()]
        return 200, {"tags": found, "meta": {"total": str(len(found))}}

    def create_tag(self, call):
        tag = (call.body or {}).get("tag") or {}
        if not tag.get("tag"):
            return 422, self.error_body(422, "Tag name is required")
        if any(t["tag"] == tag["tag"] for t in self.tags.values()):
            return 422, self.error_body(422, "Duplicate entry for tag")
        created = {**tag, "id": self._id()}
        self.tags[created["id"]] = created
        return 201, {"tag": created}

    def list_contact_tags(self, call):
        if call.params["id"] not in self.contacts:
            return 404, {"message": f"No Result found for Subscriber with id {call.params['id']}"}
        return 200, {"contactTags": [ct for ct in self.contact_tags.values() if ct["contact"] == call.params["id"]]}

    def add_contact_tag(self, call):
        link = (call.body or {}).get("contactTag") or {}
        contact, tag = str(link.get("contact")), str(link.get("tag"))
        if contact not in self.contacts or tag not in self.tags:
            return 422, self.error_body(422, "Contact or tag does not exist")
        created = {"contact": contact, "tag": tag, "id": self._id()}
        self.contact_tags[created["id"]] = created
        self.added_tags.append((self.contacts[contact]["email"], self.tags[tag]["tag"]))
        return 201, {"contactTag": created}

    def remove_contact_tag(self, call):
        if self.contact_tags.pop(call.params["id"], None) is None:
            return 404, {"message": f"No Result found for ContactTag with id {call.params['id']}"}
        return 200, {}

    # Reading back -------------------------------------------------------------------

    def contact(self, email: str) -> dict | None:
        return next((c for c in self.contacts.values() if c["email"] == email), None)

    def tags_of(self, email: str) -> set[str]:
        contact = self.contact(email)
        return {self.tags[ct["tag"]]["tag"] for ct in self.contact_tags.values()
                if contact and ct["contact"] == contact["id"]}

    def list_status(self, email: str, list_id: str) -> str | None:
        """"subscribed", "unsubscribed", or None when the contact was never put on the list."""
        contact = self.contact(email)
        status = self.memberships.get((contact["id"], list_id)) if contact else None
        return {1: "subscribed", 2: "unsubscribed"}.get(status)

    def mailable(self, email: str) -> bool:
        """ActiveCampaign sends campaigns and automation emails only to active list subscribers.
        https://help.activecampaign.com/hc/en-us/articles/9384583447580-ActiveCampaign-contact-list-status-segment-conditions"""
        contact = self.contact(email)
        return bool(contact) and any(c == contact["id"] and status == 1
                                     for (c, _), status in self.memberships.items())

    def field_values(self, email: str) -> dict[str, str]:
        contact = self.contact(email)
        titles = {fid: f["title"] for fid, f in self.fields.items()}
        return {titles[fid]: v for (cid, fid), v in self.values.items() if contact and cid == contact["id"]}
