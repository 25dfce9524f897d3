"""A payment is a billing cycle, not an attempt; a renewal's money is counted once.

Shopify billing attempts and Recharge charges go through their real normalizers into a real
database and the rules, as the worker runs them.
"""
from datetime import timedelta
from itertools import permutations

from sqlalchemy import select

from hub.models import Payment
from standins.shopify import contract_node
from tests.hub.sync.rules.conftest import at
from tests.samples import load_sample, stripe_event
from webhooks.envelope import Envelope
from webhooks.recharge import webhook as recharge
from webhooks.shopify import webhook as shopify
from webhooks.stripe import webhook as stripe_hook

CONTRACT = "gid://shopify/SubscriptionContract/42"
BOB = "bob@biller.com"  # the customer of standins.shopify.contract_node
RENEWAL_TOTAL = 4998    # 2 × 24.99 CAD, what the contract bills per cycle


def shopify_attempt(world, outcome: str, key: str, when: str, order_id=None):
    """One subscription_billing_attempts/<outcome> webhook, enriched with its contract."""
    topic = f"subscription_billing_attempts/{outcome}"
    payload = {**load_sample(f"shopify/subscription_billing_attempts_{outcome}.json"),
               "idempotency_key": key, "subscription_contract_id": 42,
               "admin_graphql_api_subscription_contract_id": CONTRACT,
               "order_id": order_id, "admin_graphql_api_order_id":
               f"gid://shopify/Order/{order_id}" if order_id else None,
               "contract": contract_node(CONTRACT)}
    envelope = Envelope(event_id=key, topic=topic, shop="example.myshopify.com", triggered_at=at(when))
    return [name for event in shopify.TOPICS[topic](payload, envelope) for name in world.receive(event)]


def shopify_order(world, topic: str, order_id: int, when: str, total="49.98", currency="CAD"):
    """orders/create or orders/paid of the renewal order a contract made."""
    payload = {**load_sample("shopify/orders_paid.json"), "id": order_id, "total_price": total,
               "currency": currency, "source_name": "subscription_contract_checkout_one",
               "financial_status": "paid", "updated_at": when, "processed_at": when,
               "email": BOB, "customer": {"id": 1, "email": BOB}}
    envelope = Envelope(event_id=f"{topic}:{order_id}", topic=topic, triggered_at=at(when))
    return [name for event in shopify.TOPICS[topic](payload, envelope) for name in world.receive(event)]


def recharge_charge(world, topic: str, when: str, attempts: int, order_id=None, retry=None):
    """charge/failed or charge/paid of Recharge's charge 580293301 (one billing cycle)."""
    charge = load_sample("recharge/charge_paid.json")["charge"]
    paid = topic == "charge/paid"
    charge.update(status="success" if paid else "error", charge_attempts=attempts, updated_at=when,
                  processed_at=when if paid else None, retry_date=retry,
                  error=None if paid else "Your card was declined.",
                  error_type=None if paid else "CLOSED_MAX_RETRIES_REACHED",
                  external_order_id={"ecommerce": order_id})
    envelope = Envelope(event_id=f"{topic}:{when}", topic=topic, triggered_at=at(when))
    return [name for event in recharge.TOPICS[topic]({"charge": charge}, envelope)
            for name in world.receive(event)]


def payments(world):
    with world.storage.session() as session:
        return [(p.source, p.status, p.attempt_count) for p in session.scalars(select(Payment))]


def reminders_after(world, start: str, days: int) -> list:
    """Sweep each morning from `start`; the names of the triggers the sweeps fired."""
    for n in range(days):
        world.sweep((at(start) + timedelta(days=n)).isoformat())
    return [name for name, rule, *_ in world.triggers() if rule == "payment-reminder"]


def test_fail_fail_succeed_of_one_shopify_cycle_is_one_recovered_payment(world):
    shopify_attempt(world, "failure", "cycle-1-try-1", "2026-11-29T12:00")
    shopify_attempt(world, "failure", "cycle-1-try-2", "2026-12-02T12:00")
    reminders_before = reminders_after(world, "2026-11-30T06:00", 6)
    fired = shopify_attempt(world, "success", "cycle-1-try-3", "2026-12-05T12:00", order_id=9001)

    assert payments(world) == [("shopify", "succeeded", 2)]
    assert "Payment Recovered" in fired
    assert reminders_after(world, "2026-12-05T13:00", 20) == reminders_before
    assert world.subscriber(BOB).stage != "at_risk"
    shopify_order(world, "orders/paid", 9001, "2026-12-05T12:00:06+00:00")
    assert world.subscriber(BOB).lifetime_spend == RENEWAL_TOTAL


def test_a_late_failure_of_a_paid_cycle_does_not_reopen_it(world):
    shopify_attempt(world, "failure", "cycle-1-try-1", "2026-11-29T12:00")
    shopify_attempt(world, "success", "cycle-1-try-2", "2026-12-02T12:00", order_id=9001)
    shopify_attempt(world, "failure", "cycle-1-try-1-again", "2026-11-29T12:00")

    assert payments(world) == [("shopify", "succeeded", 1)]
    assert world.subscriber(BOB).stage != "at_risk"


def test_the_next_cycle_after_a_paid_one_is_a_payment_of_its_own(world):
    shopify_attempt(world, "success", "cycle-1", "2026-11-29T12:00", order_id=9001)
    shopify_attempt(world, "failure", "cycle-2-try-1", "2026-12-27T12:00")

    assert payments(world) == [("shopify", "succeeded", 0), ("shopify", "failed", 1)]


def test_a_shopify_renewal_and_its_order_add_to_spend_once(world):
    shopify_attempt(world, "success", "cycle-1", "2026-11-29T12:00", order_id=9001)
    shopify_order(world, "orders/create", 9001, "2026-11-29T12:00:05+00:00")
    shopify_order(world, "orders/paid", 9001, "2026-11-29T12:00:06+00:00")

    assert world.subscriber(BOB).lifetime_spend == RENEWAL_TOTAL


def test_a_shopify_renewal_counts_what_its_order_took_in_the_shops_currency(world):
    # The contract bills 49.98 CAD in lines; the order it made took 41.20 USD in the shop's
    # money, shipping and tax included. The subscriber's spend is kept in USD.
    shopify_order(world, "orders/paid", 9000, "2026-10-29T12:00:06+00:00", total="35.00", currency="USD")
    shopify_attempt(world, "success", "cycle-1", "2026-11-29T12:00", order_id=9001)
    assert world.subscriber(BOB).lifetime_spend == 3500
    shopify_order(world, "orders/paid", 9001, "2026-11-29T12:00:06+00:00", total="41.20", currency="USD")

    assert world.subscriber(BOB).lifetime_spend == 3500 + 4120


def test_an_order_counted_before_its_billing_attempt_is_not_counted_again(world):
    shopify_order(world, "orders/paid", 9001, "2026-11-29T12:00:06+00:00")
    shopify_attempt(world, "success", "cycle-1", "2026-11-29T12:00", order_id=9001)

    subscriber = world.subscriber(BOB)
    assert subscriber.lifetime_spend == RENEWAL_TOTAL
    assert subscriber.loyalty_points == RENEWAL_TOTAL // 100


def test_fail_fail_succeed_of_one_recharge_charge_is_one_recovered_payment(world):
    recharge_charge(world, "charge/failed", "2026-04-09T04:00:00+00:00", 1, retry="2026-04-12T04:00:00+00:00")
    recharge_charge(world, "charge/failed", "2026-04-12T04:00:00+00:00", 2, retry="2026-04-15T04:00:00+00:00")
    reminders_before = reminders_after(world, "2026-04-10T06:00", 5)
    fired = recharge_charge(world, "charge/paid", "2026-04-15T04:00:00+00:00", 3, order_id="4512345678901")

    assert payments(world) == [("recharge", "succeeded", 3)]
    assert "Payment Recovered" in fired
    assert reminders_after(world, "2026-04-15T06:00", 20) == reminders_before
    assert world.subscriber("niels.bohr@example.com").stage != "at_risk"


def test_a_recharge_charge_and_its_shopify_order_add_to_spend_once(world):
    recharge_charge(world, "charge/paid", "2026-04-09T04:00:12+00:00", 1, order_id="4512345678901")
    payload = {**load_sample("shopify/orders_paid.json"), "id": 4512345678901, "total_price": "49.00",
               "currency": "USD", "updated_at": "2026-04-09T04:00:20+00:00", "email": "niels.bohr@example.com",
               "customer": {"id": 6270530322618, "email": "niels.bohr@example.com"}}
    envelope = Envelope(event_id="paid-1", topic="orders/paid", triggered_at=at("2026-04-09T04:00:20"))
    for event in shopify.TOPICS["orders/paid"](payload, envelope):
        world.receive(event)

    assert world.subscriber("niels.bohr@example.com").lifetime_spend == 4900


def test_a_charge_in_the_customers_currency_leaves_its_order_to_count_the_shops(world):
    """Spend is kept in one currency: a renewal charged in EUR cannot add to spend kept in USD,
    and then its Shopify order, in the shop's USD, counts it."""
    niels = {"id": 6270530322618, "email": "niels.bohr@example.com"}
    first = {**load_sample("shopify/orders_paid.json"), "id": 1001, "total_price": "20.00", "currency": "USD",
             "updated_at": "2026-03-01T10:00:00+00:00", "email": niels["email"], "customer": niels}
    for event in shopify.TOPICS["orders/paid"](first, Envelope(event_id="paid-0", topic="orders/paid")):
        world.receive(event)
    charge = load_sample("recharge/charge_paid.json")["charge"]
    charge.update(currency="EUR", total_price="45.00", updated_at="2026-04-09T04:00:12+00:00",
                  external_order_id={"ecommerce": "4512345678901"})
    for event in recharge.TOPICS["charge/paid"]({"charge": charge}, Envelope(event_id="c1", topic="charge/paid")):
        world.receive(event)
    renewal = {**first, "id": 4512345678901, "total_price": "49.00", "updated_at": "2026-04-09T04:00:20+00:00"}
    for event in shopify.TOPICS["orders/paid"](renewal, Envelope(event_id="paid-1", topic="orders/paid")):
        world.receive(event)

    assert world.subscriber("niels.bohr@example.com").lifetime_spend == 2000 + 4900


def test_a_refund_reported_by_recharge_and_by_shopify_subtracts_once(world):
    niels = {"id": 6270530322618, "email": "niels.bohr@example.com"}
    first = {**load_sample("shopify/orders_paid.json"), "id": 1001, "total_price": "20.00", "currency": "USD",
             "updated_at": "2026-03-01T10:00:00+00:00", "email": niels["email"], "customer": niels}
    for event in shopify.TOPICS["orders/paid"](first, Envelope(event_id="paid-0", topic="orders/paid")):
        world.receive(event)
    renewal = {**first, "id": 4512345678901, "total_price": "49.00", "updated_at": "2026-04-09T04:00:20+00:00"}
    for event in shopify.TOPICS["orders/paid"](renewal, Envelope(event_id="paid-1", topic="orders/paid")):
        world.receive(event)

    refunded = load_sample("recharge/charge_refunded.json")
    refunded["charge"].update(updated_at="2026-04-15T10:30:00+00:00")
    for event in recharge.TOPICS["charge/refunded"](refunded, Envelope(event_id="r1", topic="charge/refunded")):
        world.receive(event)
    refund = {**load_sample("shopify/refunds_create.json"), "order_id": 4512345678901,
              "created_at": "2026-04-15T10:30:05+00:00",
              "transactions": [{"kind": "refund", "status": "success", "amount": "49.00", "currency": "USD"}]}
    for event in shopify.TOPICS["refunds/create"](refund, Envelope(event_id="r2", topic="refunds/create")):
        world.receive(event)

    assert world.subscriber("niels.bohr@example.com").lifetime_spend == 2000


def partially_refunded_renewal(n: int) -> tuple[str, dict]:
    """Customer n's Recharge renewal of 49.00 USD and its Shopify order, refunded 10.00 then 5.00,
    as each source reports it: (email, events by name)."""
    email, order_id = f"refunded{n}@example.com", str(4512345678000 + n)
    charge = load_sample("recharge/charge_refunded.json")["charge"]
    charge.update(id=580293000 + n, external_order_id={"ecommerce": order_id}, processed_at="2026-04-09T04:00:12",
                  customer={"id": 33330000 + n, "email": email, "external_customer_id": {"ecommerce": str(n)}})
    paid = {**charge, "status": "success", "total_refunds": "0.00", "updated_at": "2026-04-09T04:00:12+00:00"}
    first = {**charge, "status": "partially_refunded", "total_refunds": "10.00",
             "updated_at": "2026-04-15T10:30:00+00:00"}
    second = {**first, "total_refunds": "15.00", "updated_at": "2026-04-16T10:30:00+00:00"}
    order = {**load_sample("shopify/orders_paid.json"), "id": int(order_id), "total_price": "49.00",
             "currency": "USD", "updated_at": "2026-04-09T04:00:20+00:00", "email": email,
             "customer": {"id": n, "email": email}}

    def store_refund(refund_id: int, amount: str, when: str) -> dict:
        return {**load_sample("shopify/refunds_create.json"), "id": refund_id, "order_id": int(order_id),
                "created_at": when,
                "transactions": [{"kind": "refund", "status": "success", "amount": amount, "currency": "USD"}]}

    def events(source, topic: str, payload: dict) -> list:
        return source.TOPICS[topic](payload, Envelope(event_id=f"{topic}:{n}", topic=topic))

    return email, {
        "charge paid": events(recharge, "charge/paid", {"charge": paid}),
        "order paid": events(shopify, "orders/paid", order),
        "charge refunded 10": events(recharge, "charge/refunded", {"charge": first}),
        "store refund 10": events(shopify, "refunds/create", store_refund(n * 10 + 1, "10.00", "2026-04-15T10:30:05Z")),
        "charge refunded 15": events(recharge, "charge/refunded", {"charge": second}),
        "store refund 5": events(shopify, "refunds/create", store_refund(n * 10 + 2, "5.00", "2026-04-16T10:30:05Z")),
    }


def test_partial_refunds_reported_by_recharge_and_by_shopify_subtract_once_in_any_order_and_on_replay(world):
    for n, arrival in enumerate(permutations(["charge paid", "order paid", "charge refunded 10", "store refund 10"])):
        email, events = partially_refunded_renewal(n + 1)
        for name in arrival:
            for event in events[name]:
                world.receive(event)
        assert world.subscriber(email).lifetime_spend == 4900 - 1000, arrival
        for name in ("store refund 5", "charge refunded 15"):
            for event in events[name]:
                world.receive(event)
        assert world.subscriber(email).lifetime_spend == 4900 - 1500, arrival
        for name in (*arrival, "charge refunded 15", "store refund 5"):  # a replay of every event
            for event in events[name]:
                world.receive(event)
        assert world.subscriber(email).lifetime_spend == 4900 - 1500, arrival


def test_an_attempt_one_billing_interval_after_an_unpaid_cycle_began_is_the_next_cycle(world):
    # The contract bills every 4 weeks (standins.shopify.contract_node).
    shopify_attempt(world, "failure", "cycle-1-try-1", "2026-11-29T12:00")
    shopify_attempt(world, "failure", "cycle-1-try-2", "2026-12-20T12:00")
    shopify_attempt(world, "failure", "cycle-2-try-1", "2026-12-27T12:00")
    shopify_attempt(world, "success", "cycle-2-try-2", "2026-12-30T12:00", order_id=9002)

    assert payments(world) == [("shopify", "failed", 2), ("shopify", "succeeded", 1)]


def test_a_recharge_order_and_the_shopify_order_it_made_are_one_order_whichever_comes_first(world):
    """Recharge's order/created names the store order its charge made (external_order_id,
    https://docs.getrecharge.com/docs/orders); the store's own orders/create is that order."""
    for n, arrival in enumerate((("recharge", "shopify"), ("shopify", "recharge"))):
        email, order_id = f"orders{n}@example.com", 4512345678000 + n
        made = load_sample("recharge/order_created.json")["order"]
        made.update(id=441230000 + n, external_order_id={"ecommerce": str(order_id)},
                    customer={**made["customer"], "id": 33330000 + n, "email": email,
                              "external_customer_id": {"ecommerce": str(n + 1)}})
        placed = {**load_sample("shopify/orders_create.json"), "id": order_id, "email": email,
                  "customer": {"id": n + 1, "email": email}, "updated_at": "2026-04-09T04:00:20+00:00"}
        events = {"recharge": recharge.TOPICS["order/created"]({"order": made}, Envelope(
                      event_id=f"rc-{n}", topic="order/created")),
                  "shopify": shopify.TOPICS["orders/create"](placed, Envelope(
                      event_id=f"sh-{n}", topic="orders/create"))}
        for source in arrival:
            for event in events[source]:
                world.receive(event)
        assert world.subscriber(email).orders_count == 1, arrival


def test_stripe_refunds_of_one_charge_take_off_its_running_total_once_in_any_order(world):
    """A charge's amount_refunded is the total given back so far; from API 2022-11-15 the
    charge lists no refunds, and charge.refunded need not say what the total was before."""
    session = {**load_sample("shared:stripe/pay/checkout.session.completed.json")["object"],
               "mode": "payment", "subscription": None, "payment_intent": "pi_refunded", "amount_total": 1500}
    charge = {**load_sample("shared:stripe/pay/charge.refunded.json")["object"], "payment_intent": "pi_refunded",
              "customer": session["customer"], "refunds": None}
    paid = stripe_event("checkout.session.completed", session, event_id="evt_paid", created=1_700_000_000)
    first, second = (stripe_event("charge.refunded", {**charge, "amount_refunded": total}, event_id=f"evt_r{total}",
                                  created=1_700_000_000 + total) for total in (500, 1000))
    for event in (paid, first, second, first):  # the first refund's webhook retried last
        for canonical in stripe_hook.TOPICS[event["type"]](event, Envelope(event_id=event["id"], topic=event["type"])):
            world.receive(canonical)
    assert world.subscriber("chris@gorails.com").lifetime_spend == 1500 - 1000


def test_a_partial_refund_and_a_chargeback_of_the_rest_take_the_whole_order_once(world):
    session = {**load_sample("shared:stripe/pay/checkout.session.completed.json")["object"],
               "mode": "payment", "subscription": None, "payment_intent": "pi_charged_back", "amount_total": 1500}
    charge = {**load_sample("shared:stripe/pay/charge.refunded.json")["object"], "payment_intent": "pi_charged_back",
              "customer": session["customer"], "refunds": None, "amount_refunded": 500}
    dispute = {**load_sample("shared:stripe/fixtures3.json")["resources"]["dispute"], "amount": 1000,
               "payment_intent": "pi_charged_back", "balance_transactions": [{"amount": -1000, "currency": "usd"}]}
    paid = stripe_event("checkout.session.completed", session, event_id="evt_paid", created=1_700_000_000)
    refunded = stripe_event("charge.refunded", charge, event_id="evt_refund", created=1_700_000_100)
    withdrawn = stripe_event("charge.dispute.funds_withdrawn", dispute, event_id="evt_dispute", created=1_700_000_200)
    for event in (paid, refunded, withdrawn, refunded):  # the refund's webhook retried last
        for canonical in stripe_hook.TOPICS[event["type"]](event, Envelope(event_id=event["id"], topic=event["type"])):
            world.receive(canonical)
    assert world.subscriber("chris@gorails.com").lifetime_spend == 0


def test_an_invoice_credited_outside_stripe_counts_less_until_the_credit_note_is_voided(world):
    invoice = {"id": "in_credited", "object": "invoice", "customer": "cus_credited", "status": "paid",
               "customer_email": "carla@example.com", "amount_paid": 4500, "currency": "usd"}
    note = {**load_sample("shared:stripe/fixtures3.json")["resources"]["credit_note"], "invoice": "in_credited",
            "customer": "cus_credited", "type": "post_payment", "total": 1500, "out_of_band_amount": 1500}

    def receive(event_type, obj, created):
        event = stripe_event(event_type, obj, event_id=f"evt_{event_type}", created=created)
        for canonical in stripe_hook.TOPICS[event_type](event, Envelope(event_id=event["id"], topic=event_type)):
            world.receive(canonical)
        return world.subscriber("carla@example.com").lifetime_spend

    assert receive("invoice.paid", invoice, 1_700_000_000) == 4500
    assert receive("credit_note.created", note, 1_700_000_100) == 3000
    assert receive("credit_note.voided", {**note, "status": "void"}, 1_700_000_200) == 4500


def test_a_prepaid_recharge_order_is_one_order_placed_when_it_is_processed(world):
    queued = load_sample("recharge/order_created.json")["order"]
    queued.update(status="queued", processed_at=None, external_order_id={"ecommerce": None})
    processed = load_sample("recharge/order_created.json")["order"]
    for topic, order in (("order/created", queued), ("order/processed", processed)):
        for event in recharge.TOPICS[topic]({"order": order}, Envelope(event_id=topic, topic=topic)):
            world.receive(event)
    niels = world.subscriber("niels.bohr@example.com")
    assert niels.orders_count == 1 and niels.last_order_at == at(processed["processed_at"])
