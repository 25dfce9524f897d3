"""The Admin GraphQL stand-in (shopify.py) plus what the rule layer asks:
`inventoryItem` (item → variant and product) and `subscriptionBillingAttemptCreate`, with
Shopify's idempotency: a repeated idempotencyKey returns the same attempt, not a new one.
Both draw on the query-cost bucket of standins/shopify.py, as every call does.
"""
from __future__ import annotations

from standins.shopify import FakeShopifyAdmin, access_denied

MUTATION_COST = 10


class FakeShopifyBilling(FakeShopifyAdmin):
    """`items`: inventory item number → (product number, variant number); `attempts`: one
    (contract gid, idempotency key) per billing attempt Shopify would have made."""

    def __init__(self, token: str = "shpat_test", owns_contracts: bool = False):
        super().__init__(token, owns_contracts=owns_contracts)
        self.items: dict[str, tuple[str, str]] = {}
        self.attempts: list[tuple[str, str]] = []
        self._by_key: dict[str, str] = {}

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
        if not self.owned(str(variables.get("contract", ""))):
            return 200, {"data": {"subscriptionBillingAttemptCreate": {
                "subscriptionBillingAttempt": None,
                "userErrors": [{"field": ["subscriptionContractId"], "message": "Subscription contract does not exist",
                                "code": "CONTRACT_NOT_FOUND"}]}}}
        # A contract that is not active cannot be billed (BillingAttemptUserErrorCode,
        # https://shopify.dev/docs/api/admin-graphql/latest/enums/BillingAttemptUserErrorCode).
        status = (self.contracts.get(str(variables.get("contract", ""))) or {}).get("status", "ACTIVE")
        refused = {"PAUSED": ("CONTRACT_PAUSED", "Subscription contract cannot be billed if paused."),
                   "CANCELLED": ("CONTRACT_TERMINATED", "Subscription contract cannot be billed once terminated."),
                   "EXPIRED": ("CONTRACT_TERMINATED", "Subscription contract cannot be billed once terminated."),
                   "FAILED": ("CONTRACT_TERMINATED", "Subscription contract cannot be billed once terminated.")}
        if status in refused:
            code, message = refused[status]
            return 200, {"data": {"subscriptionBillingAttemptCreate": {
                "subscriptionBillingAttempt": None,
                "userErrors": [{"field": ["subscriptionContractId"], "message": message, "code": code}]}}}
        key = (variables.get("input") or {}).get("idempotencyKey")
        if not key:
            return 200, {"data": {"subscriptionBillingAttemptCreate": {
                "subscriptionBillingAttempt": None,
                "userErrors": [{"field": ["idempotencyKey"], "message": "Idempotency key can't be blank",
                                "code": "BLANK"}]}}}
        if key not in self._by_key:
            self.attempts.append((variables.get("contract"), key))
            self._by_key[key] = f"gid://shopify/SubscriptionBillingAttempt/{len(self.attempts)}"
        return 200, {"data": {"subscriptionBillingAttemptCreate": {
            "subscriptionBillingAttempt": {"id": self._by_key[key], "ready": False, "errorMessage": None},
            "userErrors": []}}}
