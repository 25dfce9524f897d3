"""The Admin GraphQL stand-in (shopify.py) plus what the rule layer asks:
`inventoryItem` (item → variant and product) and `subscriptionBillingAttemptCreate`, with
Shopify's idempotency: a repeated idempotencyKey returns the same attempt, not a new one.
Both draw on the query-cost bucket of standins/shopify.py, as every call does.

A billing attempt is asynchronous, as Shopify's is: the mutation answers `ready: false`
("whether the billing attempt is still processing" is not over yet), and the outcome reaches
the app later as a `subscription_billing_attempts/success` or `/failure` webhook
(https://shopify.dev/docs/api/admin-graphql/latest/objects/SubscriptionBillingAttempt,
https://shopify.dev/docs/api/webhooks?reference=toml#list-of-topics). `settle()` is that
later moment: it finishes every attempt still processing and returns the webhooks' topics
and bodies, for the test to post as Shopify would.
"""
from __future__ import annotations

from datetime import datetime, timezone

from standins.shopify import FakeShopifyAdmin, access_denied

MUTATION_COST = 10


class FakeShopifyBilling(FakeShopifyAdmin):
    """`items`: inventory item number → (product number, variant number); `attempts`: one
    (contract gid, idempotency key) per billing attempt Shopify would have made, and
    `attempt_cycles` the index of the billing cycle each one bills: the one its
    `billingCycleSelector` picks, else the cycle under way at `clock()` ("Default to bill the
    current billing cycle if not specified",
    https://shopify.dev/docs/api/admin-graphql/latest/input-objects/SubscriptionBillingAttemptInput)."""

    def __init__(self, token: str = "shpat_test", owns_contracts: bool = False):
        super().__init__(token, owns_contracts=owns_contracts)
        self.items: dict[str, tuple[str, str]] = {}
        self.attempts: list[tuple[str, str]] = []
        self.attempt_cycles: list[int | None] = []
        self.clock = lambda: datetime.now(timezone.utc)  # Shopify's "now" (tests set their simulated day)
        self.declines: set[str] = set()  # contract gids whose next attempts the card declines
        # Attempts to refuse next with THROTTLED: from API 2026-01 Shopify throttles billing
        # attempts "based on internal trust metrics", the new `throttled` user error code
        # (https://shopify.dev/changelog/subscription-billing-attempts-throttling).
        self.throttle_next = 0
        self._by_key: dict[str, str] = {}
        self._processing: list[int] = []  # attempts (index into `attempts`) not finished yet
        self._ready: dict[str, str | None] = {}  # attempt gid finished → its error message (None: paid)

    def settle(self) -> list[tuple[str, dict]]:
        """Finish every attempt still processing: a successful one makes an order, a declined
        one fails. The webhooks Shopify then sends the app, in its payload's shape."""
        out = []
        for index in self._processing:
            contract, key = self.attempts[index]
            number = index + 1
            declined = contract in self.declines
            order = None if declined else 820982911946154500 + number
            out.append(("subscription_billing_attempts/failure" if declined else
                        "subscription_billing_attempts/success", {
                            "id": number, "admin_graphql_api_id": f"gid://shopify/SubscriptionBillingAttempt/{number}",
                            "idempotency_key": key, "order_id": order,
                            "admin_graphql_api_order_id": f"gid://shopify/Order/{order}" if order else None,
                            "subscription_contract_id": int(contract.rsplit("/", 1)[-1]),
                            "admin_graphql_api_subscription_contract_id": contract, "ready": True,
                            "error_message": "Payment method was declined by processor." if declined else None,
                            "error_code": "PAYMENT_METHOD_DECLINED" if declined else None}))
            self._ready[f"gid://shopify/SubscriptionBillingAttempt/{number}"] = out[-1][1]["error_message"]
        self._processing = []
        return out

    def answer(self, path: str, headers: dict, body: dict):
        query = body.get("query", "")
        if "subscriptionBillingAttemptCreate" not in query and "inventoryItem(" not in query:
            return super().answer(path, headers, body)
        status, answer = super().answer(path, headers, {**body, "query": "shop {"})  # auth, errors, log
        if self.requests:
            self.requests[-1]["query"] = query
        if status != 200 or "errors" in answer:
            return status, answer
        variables = body.get("variables") or {}
        if "inventoryItem(" in query:
            number = str(variables.get("id", "")).rsplit("/", 1)[-1]
            if number not in self.items:
                return self._costed(3, 1, {"inventoryItem": None})
            product, variant = self.items[number]
            return self._costed(3, 3, {"inventoryItem": {  # the item, its variant and product
                "id": variables["id"], "variant": {"id": f"gid://shopify/ProductVariant/{variant}",
                                                   "product": {"id": f"gid://shopify/Product/{product}"}}}})
        # A mutation costs 10 points (https://shopify.dev/docs/apps/build/apis/graphql-admin/rate-limits),
        # from the same bucket as every query.
        refused = self._throttled(MUTATION_COST)
        if refused:
            return refused
        status, answer = self._attempt(variables)
        return status, {**answer, "extensions": {"cost": self._spend(MUTATION_COST, MUTATION_COST)}}

    def _attempt(self, variables: dict):
        # Billing another app's contract is refused like reading it (ContractOwnership).
        if not self.scopes & {"write_own_subscription_contracts"}:
            return 200, {"errors": [access_denied("subscriptionBillingAttemptCreate",
                                                  "write_own_subscription_contracts")]}
        gid = str(variables.get("contract", ""))
        contract = self.contracts.get(gid)
        if contract is None or not self.owned(gid):  # not held, or another app's
            return 200, {"data": {"subscriptionBillingAttemptCreate": {
                "subscriptionBillingAttempt": None,
                "userErrors": [{"field": ["subscriptionContractId"], "message": "Subscription contract does not exist",
                                "code": "CONTRACT_NOT_FOUND"}]}}}
        # A contract that is not active cannot be billed (BillingAttemptUserErrorCode,
        # https://shopify.dev/docs/api/admin-graphql/latest/enums/BillingAttemptUserErrorCode).
        status = contract.get("status", "ACTIVE")
        refused = {"PAUSED": ("CONTRACT_PAUSED", "Subscription contract cannot be billed if paused."),
                   "CANCELLED": ("CONTRACT_TERMINATED", "Subscription contract cannot be billed once terminated."),
                   "EXPIRED": ("CONTRACT_TERMINATED", "Subscription contract cannot be billed once terminated."),
                   "FAILED": ("CONTRACT_TERMINATED", "Subscription contract cannot be billed once terminated.")}
        if status in refused:
            code, message = refused[status]
            return 200, {"data": {"subscriptionBillingAttemptCreate": {
                "subscriptionBillingAttempt": None,
                "userErrors": [{"field": ["subscriptionContractId"], "message": message, "code": code}]}}}
        if self.throttle_next > 0:
            self.throttle_next -= 1
            return 200, {"data": {"subscriptionBillingAttemptCreate": {
                "subscriptionBillingAttempt": None,
                "userErrors": [{"field": None, "message": "Billing attempt was throttled.", "code": "THROTTLED"}]}}}
        key = (variables.get("input") or {}).get("idempotencyKey")
        if not key:
            return 200, {"data": {"subscriptionBillingAttemptCreate": {
                "subscriptionBillingAttempt": None,
                "userErrors": [{"field": ["idempotencyKey"], "message": "Idempotency key can't be blank",
                                "code": "BLANK"}]}}}
        selector = (variables.get("input") or {}).get("billingCycleSelector") or {}
        at = datetime.fromisoformat(selector["date"].replace("Z", "+00:00")) if selector.get("date") else self.clock()
        index = int(selector["index"]) if selector.get("index") is not None else self.cycle_index_at(gid, at)
        if index in self.skipped.get(gid, set()):
            # As Shopify's reference app meets it: "Cannot charge a skipped billing cycle".
            return 200, {"data": {"subscriptionBillingAttemptCreate": {
                "subscriptionBillingAttempt": None,
                "userErrors": [{"field": ["billingCycleSelector"], "message": "Cannot charge a skipped billing cycle",
                                "code": "BILLING_CYCLE_SKIPPED"}]}}}
        if key not in self._by_key:
            self.attempts.append((variables.get("contract"), key))
            self.attempt_cycles.append(index)
            self._processing.append(len(self.attempts) - 1)
            self._by_key[key] = f"gid://shopify/SubscriptionBillingAttempt/{len(self.attempts)}"
        attempt = self._by_key[key]
        return 200, {"data": {"subscriptionBillingAttemptCreate": {
            "subscriptionBillingAttempt": {"id": attempt, "ready": attempt in self._ready,
                                           "errorMessage": self._ready.get(attempt)},
            "userErrors": []}}}
