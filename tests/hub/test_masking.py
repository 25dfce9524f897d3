"""Masking for lists, and raw bodies without secrets or card data."""
from __future__ import annotations

import json
import logging
import os
import stat

from hub import make_hub
from hub.db.engine import Storage
from hub.masking import REMOVED, luhn_valid, mask_email, mask_phone, mask_text, scrub_body, scrub_headers
from hub.models import Base, Subscriber
from hub.sync.inbox import drain_inbox
from tests.hub.sync.test_compliance import _found, _history, _push_all, _redact, tools  # noqa: F401 - a fixture
from tests.samples import post
from webhooks import Envelope


def test_emails_and_phones_are_masked_enough_to_tell_people_apart():
    assert mask_email("jenny.rosen@example.com") == "j***@example.com"
    assert mask_email(None) == ""
    assert mask_phone("+15551234567") == "+*******4567"
    assert mask_phone("555 1234") == "***1234"
    assert mask_text("Invalid email jenny@ex.com, call +1 555 123 4567") == \
        "Invalid email j***@ex.com, call +*******4567"


def test_card_numbers_security_codes_and_credentials_are_removed_from_bodies():
    body = json.dumps({
        "id": 820982911946154508, "email": "a@b.com", "order_number": 1001, "number": "#1001",
        "customer_id": "4242424242424242",  # an id, even when its digits pass Luhn
        "payment_method": {"card": {"number": "4242 4242 4242 4242", "cvc": "123", "exp_month": 12,
                                    "exp_year": 2030, "last4": "4242", "brand": "visa"}},
        "client_secret": "pi_1_secret_abc", "api_key": "pk_live_x", "access_token": "shpat_x",
        "note": "my card is 4111-1111-1111-1111 thanks", "nested": [{"password": "hunter2"}],
    }).encode()
    text = scrub_body(body)
    for secret in ("4242 4242 4242 4242", "123\"", "pi_1_secret_abc", "pk_live_x", "shpat_x",
                   "4111-1111-1111-1111", "hunter2"):
        assert secret not in text
    shown = json.loads(text)
    card = shown["payment_method"]["card"]
    assert card == {"number": REMOVED, "cvc": REMOVED, "exp_month": REMOVED, "exp_year": REMOVED,
                    "last4": "4242", "brand": "visa"}
    assert shown["note"] == f"my card is {REMOVED} thanks"
    # What support staff need stays.
    assert shown["id"] == 820982911946154508 and shown["order_number"] == 1001 and shown["number"] == "#1001"
    assert shown["customer_id"] == "4242424242424242" and shown["email"] == "a@b.com"


def test_bodies_that_are_not_json_are_scrubbed_as_text():
    assert scrub_body(b"password=hunter2&card=4242424242424242&x=1") == f"password={REMOVED}&card={REMOVED}&x=1"
    assert scrub_body(b"\xff\xfe broken") .endswith("broken")


def test_signature_headers_are_hidden():
    shown = scrub_headers({"X-Shopify-Hmac-Sha256": "abc=", "Stripe-Signature": "t=1,v1=x",
                           "X-Shopify-Topic": "orders/paid"})
    assert shown == {"X-Shopify-Hmac-Sha256": REMOVED, "Stripe-Signature": REMOVED, "X-Shopify-Topic": "orders/paid"}


def test_luhn():
    assert luhn_valid("4242424242424242") and not luhn_valid("4242424242424241")


def test_log_lines_mask_emails_and_phones_whoever_writes_them(hub, caplog):
    make_hub(settings=hub.settings)  # what every hub process starts with
    caplog.set_level(logging.INFO)
    logging.getLogger("hub.sync.identity").info("merged subscriber %s into %s: %s", 7, 3,
                                           "shopify customer 42 now uses Jenny.Rosen@Example.com")
    try:
        raise ValueError("UNIQUE constraint failed: ('jenny.rosen@example.com', '+15551234567')")
    except ValueError:
        logging.getLogger("sqlalchemy.engine").exception("write of subscriber +1 555 123 4567 failed")
    assert "merged subscriber 7 into 3: shopify customer 42 now uses J***@Example.com" in caplog.text
    assert "ValueError: UNIQUE constraint failed: (" in caplog.text  # the traceback stays, masked
    assert "subscriber +*******4567 failed" in caplog.text
    for raw in ("Rosen@", "rosen@", "5551234567", "555 123 4567"):
        assert raw not in caplog.text


def test_the_sqlite_files_are_readable_by_their_owner_only(tmp_path):
    previous = os.umask(0o022)  # the usual umask, which leaves new files readable by everyone
    try:
        storage = Storage(f"sqlite:///{tmp_path / 'hub.db'}")
        storage.upgrade()
        storage.inbox_writer.write("stripe", Envelope(event_id="evt_1", topic="customer.created"), {}, b"{}")
        with storage.session() as s:
            s.add(Subscriber(email="jenny.rosen@example.com"))
        files = sorted(p.name for p in tmp_path.iterdir() if ".db" in p.name)
        modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in files}
        storage.dispose()
    finally:
        os.umask(previous)
    assert {"hub.db", "hub-inbox.db", "hub.db-wal", "hub-inbox.db-wal"} <= set(files)
    assert modes == {name: 0o600 for name in files}


def test_after_a_redact_no_database_file_and_no_log_line_names_the_person(client, hub, tools, caplog, tmp_path):
    make_hub(settings=hub.settings)  # what every hub process starts with, log masking included
    caplog.set_level(logging.DEBUG)
    _history(client, hub)
    assert post(client, "shopify", _redact(), topic="customers/redact", webhook_id="r-1").status_code == 200
    drain_inbox(hub.storage, hub.settings)
    _push_all(hub)
    hub.storage.dispose()
    # The files as they are on disk, free pages and write-ahead logs included: a value
    # overwritten in a row can live on in a page SQLite no longer reads.
    if hub.storage.engine.dialect.name == "sqlite":
        files = [p for p in tmp_path.iterdir() if ".db" in p.name]
        assert {p.name for p in files} >= {"hub.db", "hub-inbox.db"}
        on_disk = {p.name: _found(p.read_bytes().decode("latin-1")) for p in files}
        assert on_disk == {p.name: [] for p in files}
    else:  # PostgreSQL keeps its files to itself: every table's text as the server returns it
        with hub.storage.engine.connect() as conn:
            tables = {t.name: _found(" ".join(str(r) for r in conn.execute(t.select())))
                      for t in Base.metadata.sorted_tables}
        assert tables == {name: [] for name in tables}
    assert _found(caplog.text) == []
