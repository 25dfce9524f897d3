"""Every model, importable from one place."""
from hub.models.base import Base, UTCDateTime, now_utc
from hub.models.consent import ConsentDrift
from hub.models.link import CustomerLink, LinkClick
from hub.models.log import (
                            BACKFILL,
                            CANCELLED,
                            DEAD,
                            FAILED,
                            IGNORED,
                            INTERRUPTED,
                            OPEN_STATUSES,
                            PENDING,
                            PROCESSED,
                            QUEUED,
                            RECONCILIATION,
                            RETRYING,
                            SENT,
                            UNINSTALLED,
                            AttemptOutcome,
                            Checkpoint,
                            Delivery,
                            DeliveryAttempt,
                            DeliveryStatus,
                            InboxEvent,
                            InboxStatus,
                            ProfileDue,
                            RetryAsk,
                            Trigger,
                            TriggerStatus,
)
from hub.models.staff import ROLES, StaffUser
from hub.models.subscriber import (
                            LIVE_STATUSES,
                            STATUSES,
                            Merge,
                            Order,
                            OrderRefunds,
                            Payment,
                            PaymentStatus,
                            Subscriber,
                            Subscription,
                            SubscriptionStatus,
)

__all__ = [
    "Base", "UTCDateTime", "now_utc", "Subscriber", "Subscription", "Payment", "Order", "OrderRefunds", "Merge",
    "InboxEvent", "Trigger", "Delivery", "DeliveryAttempt", "ProfileDue", "RetryAsk", "Checkpoint", "StaffUser",
    "ROLES",
    "STATUSES", "LIVE_STATUSES", "PENDING", "PROCESSED", "IGNORED", "FAILED", "QUEUED", "SENT",
    "RETRYING", "DEAD", "CANCELLED", "INTERRUPTED", "OPEN_STATUSES", "CustomerLink", "LinkClick",
    "UNINSTALLED", "BACKFILL", "RECONCILIATION", "InboxStatus", "TriggerStatus", "DeliveryStatus",
    "AttemptOutcome", "SubscriptionStatus", "PaymentStatus", "ConsentDrift",
]
