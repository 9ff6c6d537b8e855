"""The Plugin API operations we use, their paths, and the rate limits Neuroon documents for them.

Operation names are the bounded label of our upstream metrics and the keys of the client's limiter
and of the sandbox's fault scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Operation(StrEnum):
    SYNC_PRODUCTS = "sync_products"
    GET_PRODUCT = "get_product"
    LIST_PRODUCTS = "list_products"
    DELETE_PRODUCT = "delete_product"
    VERIFY = "verify"
    VERIFICATION_DATA = "verification_data"
    UNVERIFY = "unverify"
    SHOP_INFO = "shop_info"
    TRACK_CONVERSION = "track_conversion"
    # Only the sandbox serves these two: the widget's own API and the G1 token-issuing endpoint.
    WIDGET_SEARCH = "widget_search"
    ISSUE_WIDGET_TOKEN = "issue_widget_token"  # noqa: S105 - an operation name, not a secret


@dataclass(frozen=True, slots=True)
class Limit:
    requests: int
    window: float  # seconds


# neuroon-api.md §8.1: configured per endpoint, "not enforced today" on the Plugin API, but "will likely
# be activated; design for them". DELETE product and track/conversion have no listed bucket.
DOCUMENTED_LIMITS: dict[Operation, Limit] = {
    Operation.SYNC_PRODUCTS: Limit(100, 60),
    Operation.SHOP_INFO: Limit(60, 60),
    Operation.VERIFICATION_DATA: Limit(20, 60),
    Operation.VERIFY: Limit(5, 300),
    Operation.UNVERIFY: Limit(5, 300),
}
# A window to assume when Neuroon sends X-RateLimit-* for an operation without a documented bucket
# (one doc revision lists "other rate-limited endpoints: 100 / 1 min").
DEFAULT_WINDOW = 60.0


def shop_path(shop_id: str, rest: str = "") -> str:
    return f"/api/plugin/shops/{shop_id}{rest}"
