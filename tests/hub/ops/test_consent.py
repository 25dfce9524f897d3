"""Consent drift against the tools' loopback stand-ins: the report finds the people a tool holds
otherwise than the source of truth, and `fix` pushes the source's consent through the outbox."""
from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

from click.testing import CliRunner
from sqlalchemy import func, select, update

from connectors.ratelimit import Limiter
from hub import cli, jobs
from hub.db.unit import UnitOfWork
from hub.events import CONSENT_CHANGED, CanonicalEvent
from hub.models import DEAD, ConsentDrift, Delivery
from hub.ops import consent
from hub.schedule import schedule
from hub.sync import outbox
from hub.sync.apply import apply_event
from standins.activecampaign import FakeActiveCampaign
from standins.hubspot import FakeHubSpot
from standins.klaviyo import FakeKlaviyo
from tests.hub.web.conftest import add_staff, log_in

UNSUBSCRIBE = "/api/profile-subscription-bulk-delete-jobs"


def consent_event(email: str, state: str, at: datetime | None = None, source: str = "shopify") -> CanonicalEvent:
    """Consent given or withdrawn at the source now (or at `at`)."""
    at = at or datetime.now(timezone.utc)
    return CanonicalEvent(name=CONSENT_CHANGED, source=source, occurred_at=at, customer={"email": email},
                          data={"channel": "email", "state": state, "consented_at": at})


def record(hub, *events: CanonicalEvent) -> None:
    """Apply consent events as the inbox drain does, planning their deliveries."""
    with hub.storage.session() as session:
        unit = UnitOfWork(session)
        for one in events:
            changes = apply_event(session, one)
            outbox.plan(unit, hub.settings, changes.subscriber, changes, [], one)


def push(hub, tool: str) -> dict:
    return outbox.push_batch(hub.storage, hub.settings, tool, now=datetime.now(timezone.utc) + timedelta(seconds=5),
                             limiter=Limiter())


def unsubscribed_emails(klaviyo: FakeKlaviyo, calls) -> list[str]:
    return [p["attributes"]["email"] for c in calls for p in c.body["data"]["attributes"]["profiles"]["data"]]


def withdrawal_klaviyo_missed(hub, klaviyo: FakeKlaviyo) -> CanonicalEvent:
    """Ada, Bob and Cy subscribe at Shopify and Klaviyo gets it; Cy and Ada withdraw, and
    Klaviyo refuses Ada's unsubscribe, which dead-letters. Returns Ada's withdrawal."""
    hub.settings = replace(hub.settings, KLAVIYO_API_KEY="pk_drift", KLAVIYO_BASE_URL=klaviyo.url)
    record(hub, *(consent_event(f"{name}@example.com", "subscribed") for name in ("ada", "bob", "cy")))
    assert push(hub, "klaviyo")["sent"] == 3
    record(hub, consent_event("cy@example.com", "unsubscribed"))
    assert push(hub, "klaviyo")["sent"] == 1  # Cy's withdrawal reached Klaviyo
    withdrawn = consent_event("ada@example.com", "unsubscribed")
    record(hub, withdrawn)
    klaviyo.fail(400, path=UNSUBSCRIBE, times=1, message="Invalid input.")
    push(hub, "klaviyo")
    with hub.storage.session() as s:
        assert s.scalar(select(Delivery.status).where(Delivery.idempotency_key.like("%unsubscribed%"),
                                                      Delivery.subscriber_id == _id(s, "ada@example.com"))) == DEAD
    return withdrawn


def test_klaviyo_still_subscribed_after_the_source_withdrew_is_found_and_fixed_once(hub):
    with FakeKlaviyo(api_key="pk_drift") as klaviyo:
        withdrawn = withdrawal_klaviyo_missed(hub, klaviyo)
        before = len(klaviyo.operations("bulk_unsubscribe_profiles"))

        report = consent.run(hub, limiter=Limiter())

        [tool] = report.tools
        assert (tool.connector, tool.read, tool.checked, tool.drifted, tool.still_subscribed, tool.error) == (
            "klaviyo", 3, 3, 1, 1, None)
        with hub.storage.session() as s:
            [drift] = s.scalars(select(ConsentDrift)).all()
            assert (drift.subscriber_id, drift.kind, drift.source, drift.source_state, drift.tool_state) == (
                _id(s, "ada@example.com"), "still_subscribed", "shopify", "unsubscribed", "subscribed")
            assert drift.source_at == withdrawn.occurred_at and drift.tool_since < drift.source_at
            assert drift.fix_delivery_id is None
        assert len(klaviyo.operations("bulk_unsubscribe_profiles")) == before  # a check sends nothing

        fixed = consent.run(hub, fix=True, limiter=Limiter())
        assert fixed.fixed == 1
        assert push(hub, "klaviyo")["sent"] == 1
        sent = klaviyo.operations("bulk_unsubscribe_profiles")[before:]
        assert unsubscribed_emails(klaviyo, sent) == ["ada@example.com"]
        assert klaviyo.consent[klaviyo.profile_id("ada@example.com")]["email"]["consent"] == "UNSUBSCRIBED"
        assert consent.run(hub, limiter=Limiter()).drifted == 0


def _id(session, email: str) -> int:
    return consent.source_consent(session)["email"][email].subscriber_id


def test_the_check_runs_daily_and_on_demand_and_the_sync_log_and_dashboard_show_who(app, hub, monkeypatch):
    [entry] = [e for e in schedule(hub.settings) if e[0] is jobs.consent_job]
    assert entry[2]["cron"] == "17 3 * * *"  # once a day
    with FakeKlaviyo(api_key="pk_drift") as klaviyo:
        withdrawal_klaviyo_missed(hub, klaviyo)
        assert jobs.consent_job() == {"klaviyo": {"drifted": 1, "still_subscribed": 1, "error": None}}
        for key, value in {"DATABASE_URL": hub.settings.DATABASE_URL, "REDIS_URL": hub.settings.REDIS_URL,
                           "KLAVIYO_API_KEY": "pk_drift", "KLAVIYO_BASE_URL": klaviyo.url}.items():
            monkeypatch.setenv(key, value)
        result = CliRunner().invoke(cli.main, ["consent", "check"])
    assert result.exit_code == 0, result.output
    assert "klaviyo: 3 people checked, 1 drifted, 1 still subscribed after the source withdrew" in result.output
    assert "klaviyo: 3 read" in result.output  # progress, on stderr (click before 8.2 mixes it in)
    add_staff(hub, "sam@shop.test")
    staff = app.test_client()
    log_in(staff, "sam@shop.test")
    page = staff.get("/sync-log/consent-drift").get_data(as_text=True)
    assert page.count('class="drift-still_subscribed"') == 1
    assert "ada@example.com" not in page  # lists mask emails
    assert "unsubscribed at Shopify since" in page and "Klaviyo: subscribed since" in page
    index = staff.get("/sync-log/").get_data(as_text=True)
    assert "<strong>1</strong> people whose consent a tool holds otherwise (1 still subscribed" in index
    dashboard = staff.get("/sync-log/dashboard").get_data(as_text=True)
    first = dashboard.index("<h1>Retention dashboard</h1>") + len("<h1>Retention dashboard</h1>")
    assert dashboard[first:].lstrip().startswith('<p class="flash error consent-drift" role="alert"><strong>1 person '
                                                 'withdrew marketing consent but a tool still has them subscribed')


def test_hubspot_and_activecampaign_are_read_back_and_fixed_once_each(hub, tmp_path):
    mappings = tmp_path / "mappings"
    mappings.mkdir()
    # The stand-ins are local: the hub's limits are raised and the stand-ins hold none, so
    # 105 people are pushed in seconds (pacing at the documented limits is the Klaviyo
    # paging test's subject).
    (mappings / "activecampaign.yaml").write_text("list_id: '1'\nrate_limits: {api: 500/s}\n")
    (mappings / "hubspot.yaml").write_text(f"subscription_id: '{FakeHubSpot.MARKETING}'\n"
                                           "rate_limits: {api: 1000/10s}\n")
    with FakeActiveCampaign(api_key="ac", rate_limited=False) as ac, \
            FakeHubSpot(token="pat", rate_limited=False) as hubspot:
        hub.settings = replace(hub.settings, HUB_MAPPINGS_DIR=str(mappings), ACTIVECAMPAIGN_URL=ac.url,
                               ACTIVECAMPAIGN_API_KEY="ac", HUBSPOT_ACCESS_TOKEN="pat", HUBSPOT_BASE_URL=hubspot.url)
        people = [f"p{i}@example.com" for i in range(105)]  # more than a page of ActiveCampaign's list
        record(hub, *(consent_event(email, "subscribed") for email in people))
        for tool in ("activecampaign", "hubspot"):
            assert push(hub, tool)["sent"] == 105
        # p7 withdraws at Stripe; neither tool hears of it (the deliveries are cancelled).
        record(hub, consent_event("p7@example.com", "unsubscribed", source="stripe"))
        with hub.storage.session() as s:
            s.execute(update(Delivery).where(Delivery.status == "queued").values(status="cancelled"))

        report = consent.run(hub, limiter=Limiter())

        assert {t.connector: (t.checked, t.drifted, t.still_subscribed) for t in report.tools} == {
            "activecampaign": (105, 1, 1), "hubspot": (105, 1, 1)}
        with hub.storage.session() as s:
            drifts = s.scalars(select(ConsentDrift).order_by(ConsentDrift.connector)).all()
            assert [(d.connector, d.subscriber_id, d.source, d.tool_state) for d in drifts] == [
                ("activecampaign", _id(s, "p7@example.com"), "stripe", "subscribed"),
                ("hubspot", _id(s, "p7@example.com"), "stripe", "subscribed")]
            assert drifts[0].tool_since is not None  # the list's subscribe date
        lists_before = len(ac.operations("update_list_status"))
        unsubscribes_before = len(hubspot.operations("unsubscribe"))
        assert consent.run(hub, fix=True, limiter=Limiter()).fixed == 2
        for tool in ("activecampaign", "hubspot"):
            assert push(hub, tool)["sent"] == 1
        assert [c.body["contactList"]["status"] for c in ac.operations("update_list_status")[lists_before:]] == [2]
        assert [c.body["emailAddress"] for c in hubspot.operations("unsubscribe")[unsubscribes_before:]] == [
            "p7@example.com"]
        assert ac.list_status("p7@example.com", "1") == "unsubscribed"
        assert consent.run(hub, limiter=Limiter()).drifted == 0


def test_a_consent_given_in_the_tool_after_the_source_withdrew_is_shown_and_not_undone(hub):
    with FakeKlaviyo(api_key="pk_drift") as klaviyo:
        hub.settings = replace(hub.settings, KLAVIYO_API_KEY="pk_drift", KLAVIYO_BASE_URL=klaviyo.url)
        record(hub, consent_event("ada@example.com", "unsubscribed", datetime.now(timezone.utc) - timedelta(hours=1)))
        with hub.storage.session() as s:
            s.execute(update(Delivery).values(status="cancelled"))
        # Ada signs up again through a Klaviyo form: Klaviyo's record is the later word.
        klaviyo_subscribe(hub, klaviyo, "ada@example.com")
        report = consent.run(hub, fix=True, limiter=Limiter())
    assert (report.drifted, report.still_subscribed, report.fixed) == (1, 1, 0)
    with hub.storage.session() as s:
        [drift] = s.scalars(select(ConsentDrift)).all()
        assert drift.tool_newer and drift.fix_delivery_id is None
        assert s.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "queued")) == 0


def klaviyo_subscribe(hub, klaviyo: FakeKlaviyo, email: str) -> None:
    """Subscribe a profile in Klaviyo itself, as a sign-up form there does."""
    tool = outbox.connector_for("klaviyo", hub.settings, Limiter())
    marketing = {"email": {"marketing": {"consent": "SUBSCRIBED"}}}
    profile = {"type": "profile", "attributes": {"email": email, "subscriptions": marketing}}
    result, _ = tool._call("profile-subscription-bulk-create-jobs", {"data": {
        "type": "profile-subscription-bulk-create-job", "attributes": {"profiles": {"data": [profile]}}}})
    assert result.http_status == 202, result.message


def test_klaviyo_is_read_a_page_at_a_time_and_a_throttled_page_again_after_its_wait(hub):
    with FakeKlaviyo(api_key="pk_drift") as klaviyo:
        hub.settings = replace(hub.settings, KLAVIYO_API_KEY="pk_drift", KLAVIYO_BASE_URL=klaviyo.url)
        record(hub, *(consent_event(f"p{i}@example.com", "subscribed") for i in range(150)))
        assert push(hub, "klaviyo")["sent"] == 150
        # Given just now: its delivery waits in the outbox, so Klaviyo not holding it is no drift.
        record(hub, consent_event("late@example.com", "subscribed"))
        klaviyo.fail(429, retry_after=1, times=1, path="/api/profiles")
        seen = []
        report = consent.run(hub, limiter=Limiter(), progress=lambda tool, done, total: seen.append((tool, done)))
    [tool] = report.tools
    assert (tool.read, tool.checked, tool.drifted, tool.error) == (150, 150, 0, None)
    assert seen == [("klaviyo", 100), ("klaviyo", 150)]
    assert [c.status for c in klaviyo.operations("get_profiles")] == [429, 200, 200]
