"""Listing Shopify for `hub backfill` and reconciliation (hub/ops/backfill.py drives it).

Admin GraphQL connections `customers`, `subscriptionContracts` and `orders`, paged with
cursors (`after: endCursor` while `pageInfo.hasNextPage`), sorted by update time and
filtered with the search syntax `updated_at:>'…'` (backfill --since, reconciliation).
Each node is wrapped as the REST-shaped webhook body of its topic (`customers/update`,
`subscription_contracts/update|cancel|expire`, `orders/create|paid|cancelled`), so
webhooks.shopify.webhook normalizes it unchanged; a contract carries its node under "contract",
with an active one's billing cycles under "billing_cycles", so ENRICH fetches nothing. The
dedupe id is (gid, updatedAt).

Rate limit: Shopify's calculated query cost, paced by a CostPacer of the run's own
(webhooks.shopify.api): each page waits until the bucket holds what its stream asked last
time, and a THROTTLED answer waits for the bucket to refill and asks again.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from datetime import datetime

from hub.values import utc
from webhooks.listing import Item, Lister, Pacer, Page, dedupe_id
from webhooks.shopify import api as shopify_api
from webhooks.shopify.webhook import NAME, RENEWAL_READ

log = logging.getLogger(__name__)

_CUSTOMER = """id legacyResourceId email firstName lastName phone createdAt updatedAt
      emailMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt }
      smsMarketingConsent { marketingState marketingOptInLevel consentUpdatedAt }"""

_CONTRACT = """id status createdAt updatedAt nextBillingDate currencyCode
      customer { id email firstName lastName phone }
      billingPolicy { interval intervalCount }
      lines(first: 10) { nodes { productId variantId title quantity
        currentPrice { amount currencyCode } sellingPlanId sellingPlanName } }"""

_ORDER = """id legacyResourceId name email createdAt processedAt updatedAt cancelledAt
      displayFinancialStatus currencyCode sourceName
      totalPriceSet { shopMoney { amount currencyCode } }
      customer { id email firstName lastName phone }
      lineItems(first: 10) { nodes { title quantity variant { id } product { id }
        originalUnitPriceSet { shopMoney { amount } } sellingPlan { sellingPlanId name } } }
      refunds(first: 5) { legacyResourceId createdAt totalRefundedSet { shopMoney { amount currencyCode } } }"""

# stream -> (connection, page size, node fields, count field or None). Page sizes keep a
# query's requested cost (2 + first × the node's cost) under Shopify's 1,000 per query.
CONNECTIONS = {
    "customers": ("customers", 100, _CUSTOMER, "customersCount"),
    "subscription_contracts": ("subscriptionContracts", 25, _CONTRACT, None),
    "orders": ("orders", 10, _ORDER, "ordersCount"),
}


def list_query(stream: str, with_count: bool) -> str:
    """The GraphQL query of one page of a stream (and its total, on a run's first page)."""
    connection, _, fields, count = CONNECTIONS[stream]
    sort = ", sortKey: UPDATED_AT" if stream != "subscription_contracts" else ""
    counted = f"\n  {count}(query: $query) {{ count }}" if with_count and count else ""
    return (f"query HubList($first: Int!, $after: String, $query: String) {{\n"
            f"  {connection}(first: $first, after: $after, query: $query{sort}) {{\n"
            f"    nodes {{ {fields} }}\n    pageInfo {{ hasNextPage endCursor }}\n  }}{counted}\n}}")


def problem(settings) -> str | None:
    if not shopify_api.is_configured(settings):
        return "not configured (set SHOPIFY_SHOP and SHOPIFY_ACCESS_TOKEN)"
    return None


class Client:
    """One run's Admin GraphQL lister, paced by the cost Shopify reports."""

    def __init__(self, settings, pacer: Pacer | None = None):
        self.settings = settings
        self.paced = shopify_api.CostPacer(pacer)  # the run's own: its waits are the run's report
        self.pacer = self.paced.pacer
        self.counted: set[str] = set()

    def page(self, stream: str, cursor: dict | None, since: datetime | None) -> Page:
        if stream == "subscription_contracts" and not self.settings.SHOPIFY_OWNS_CONTRACTS:
            return Page([], None, 0)  # another app's contracts: Shopify lists the hub none
        connection, size, _, count = CONNECTIONS[stream]
        with_count = bool(count) and stream not in self.counted
        variables = {"first": size, "after": (cursor or {}).get("after"),
                     "query": f"updated_at:>'{shopify_api.shopify_time(since)}'" if since else None}
        data = self.paced.execute(self.settings, stream, list_query(stream, with_count), variables)
        self.counted.add(stream)
        found = data[connection]
        info = found.get("pageInfo") or {}
        nodes = found.get("nodes") or []
        if stream == "subscription_contracts":
            # Each active contract with its billing cycles, so that a cycle the customer skipped is
            # not taken for the next renewal (as ENRICH fetches them for a contract's webhook).
            items = [contract_item(node, shopify_api.upcoming_cycles(self.settings, node, self.paced))
                     for node in nodes]
        else:
            items = [WRAP[stream](node) for node in nodes]
        total = (data.get(count) or {}).get("count") if with_count else None
        following = {"after": info["endCursor"]} if info.get("hasNextPage") and info.get("endCursor") else None
        return Page(items, following, total)

    def renewals(self, source_ids: list[str], now: datetime) -> list[Item]:
        """These contracts as they stand now, each with its billing cycles (hub.ops.reconcile asks
        before their renewal reminders): whether a skip or a cycle edit bumps a contract's
        updatedAt is not documented, and the changes listing filters on it. The dedupe id
        names the renewal the cycles give (index, date, edited lines), so a state is stored
        once; a contract this app cannot read any more, or that Shopify refuses, is left out."""
        if not self.settings.SHOPIFY_OWNS_CONTRACTS:
            return []
        items = []
        for source_id in source_ids:
            try:
                contract = shopify_api.fetch_contract(self.settings, source_id, self.paced)
            except shopify_api.ContractNotReadable:
                continue
            except shopify_api.ShopifyAPIError as exc:
                if exc.transient:
                    raise  # the pass fails and the next one asks again (its checkpoint stays)
                log.warning("contract %s refused to reconciliation: %s", source_id, exc)
                continue  # one refused contract leaves the others read
            cycles = shopify_api.upcoming_cycles(self.settings, contract, self.paced)
            upcoming = shopify_api.next_to_bill(cycles) or {}
            lines = ((upcoming.get("editedContract") or {}).get("lines") or {}).get("nodes")
            edit = hashlib.sha256(json.dumps(lines, sort_keys=True).encode()).hexdigest()[:16] if lines else "-"
            state = (f"{contract.get('updatedAt')}/{upcoming.get('cycleIndex')}/"
                     f"{upcoming.get('billingAttemptExpectedDate')}/{edit}")
            item = contract_item(contract, cycles)
            items.append(replace(item, event_id=dedupe_id("shopify-renewal", contract["id"], state),
                                 updated_at=now, payload={**item.payload, RENEWAL_READ: True}))
        return items


# --- wrapping nodes as the webhooks carry them ---------------------------------------------

def _numeric(gid: str | None) -> str | None:
    return gid.rsplit("/", 1)[-1] if gid else None


def _lower(value) -> str | None:
    return str(value).lower() if value else None


def _consent(consent: dict | None) -> dict | None:
    if not consent:
        return None
    return {"state": _lower(consent.get("marketingState")),
            "opt_in_level": _lower(consent.get("marketingOptInLevel")),
            "consent_updated_at": consent.get("consentUpdatedAt")}


def _person(c: dict | None) -> dict | None:
    if not c:
        return None
    return {"id": _numeric(c.get("id")), "admin_graphql_api_id": c.get("id"), "email": c.get("email"),
            "first_name": c.get("firstName"), "last_name": c.get("lastName"), "phone": c.get("phone")}


def _item(kind: str, topic: str, node: dict, payload: dict, model_kind: str) -> Item:
    return Item(event_id=dedupe_id(f"shopify-{kind}", node["id"], node.get("updatedAt")), topic=topic,
                payload=payload, updated_at=utc(node.get("updatedAt")), kind=model_kind,
                source_id=_numeric(node["id"]))


def customer_item(node: dict) -> Item:
    payload = {**_person(node), "created_at": node.get("createdAt"), "updated_at": node.get("updatedAt")}
    for key, consent in (("email_marketing_consent", node.get("emailMarketingConsent")),
                         ("sms_marketing_consent", node.get("smsMarketingConsent"))):
        if _consent(consent):
            payload[key] = _consent(consent)
    return _item("customer", "customers/update", node, payload, "customer")


_CONTRACT_TOPICS = {"CANCELLED": "subscription_contracts/cancel", "EXPIRED": "subscription_contracts/expire"}


def contract_item(node: dict, cycles: list[dict] | None = None) -> Item:
    customer = node.get("customer") or {}
    policy = node.get("billingPolicy") or {}
    payload = {"admin_graphql_api_id": node["id"], "id": _numeric(node["id"]),
               "status": _lower(node.get("status")), "currency_code": node.get("currencyCode"),
               "admin_graphql_api_customer_id": customer.get("id"), "customer_id": _numeric(customer.get("id")),
               "billing_policy": {"interval": _lower(policy.get("interval")),
                                  "interval_count": policy.get("intervalCount")},
               "updated_at": node.get("updatedAt"), "contract": node,
               **({"billing_cycles": cycles} if cycles is not None else {})}
    topic = _CONTRACT_TOPICS.get(node.get("status"), "subscription_contracts/update")
    return _item("contract", topic, node, payload, "subscription")


_PAID = {"PAID", "PARTIALLY_PAID", "PARTIALLY_REFUNDED", "REFUNDED"}


def order_item(node: dict) -> Item:
    total = (node.get("totalPriceSet") or {}).get("shopMoney") or {}
    lines = []
    for line in (node.get("lineItems") or {}).get("nodes") or []:
        price = ((line.get("originalUnitPriceSet") or {}).get("shopMoney") or {}).get("amount")
        plan = line.get("sellingPlan") or {}
        lines.append({"title": line.get("title"), "quantity": line.get("quantity"), "price": price,
                      "product_id": _numeric((line.get("product") or {}).get("id")),
                      "variant_id": _numeric((line.get("variant") or {}).get("id")),
                      "selling_plan_id": plan.get("sellingPlanId"),
                      "selling_plan": {"id": plan.get("sellingPlanId"), "name": plan.get("name")}})
    payload = {"id": _numeric(node["id"]), "admin_graphql_api_id": node["id"], "name": node.get("name"),
               "email": node.get("email"), "created_at": node.get("createdAt"),
               "processed_at": node.get("processedAt"), "updated_at": node.get("updatedAt"),
               "cancelled_at": node.get("cancelledAt"),
               "financial_status": _lower(node.get("displayFinancialStatus")),
               "currency": total.get("currencyCode") or node.get("currencyCode"),
               "total_price": total.get("amount"), "source_name": node.get("sourceName"),
               "customer": _person(node.get("customer")), "line_items": lines,
               # Refunds made before the hub was installed: refunds/create fired for them then.
               "refunds": [_refund(refund) for refund in node.get("refunds") or []]}
    if node.get("cancelledAt"):
        topic = "orders/cancelled"
    elif node.get("displayFinancialStatus") in _PAID:
        topic = "orders/paid"
    else:
        topic = "orders/create"
    return _item("order", topic, node, payload, "order")


def _refund(node: dict) -> dict:
    """A Refund node as the REST refund an order webhook carries: its money as one transaction."""
    money = (node.get("totalRefundedSet") or {}).get("shopMoney") or {}
    return {"id": node.get("legacyResourceId"), "created_at": node.get("createdAt"),
            "transactions": [{"kind": "refund", "status": "success", "amount": money.get("amount"),
                              "currency": money.get("currencyCode")}]}


WRAP = {"customers": customer_item, "subscription_contracts": contract_item, "orders": order_item}

LISTER = Lister(source=NAME, streams=("customers", "subscription_contracts", "orders"),
                changes=("customers", "subscription_contracts", "orders"),
                problem=problem, client=Client,
                # https://shopify.dev/docs/api/admin-graphql/latest/objects/Order
                limit="Shopify lists the orders of the last 60 days only, unless the app has the "
                      "read_all_orders scope (request it for the app in the Partner or Dev Dashboard)")
