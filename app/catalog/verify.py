"""Domain verification: 409 "already verified" is success; a 403 gets a message saying what to fix."""

from __future__ import annotations

from dataclasses import dataclass

from app.neuroon.client import NeuroonClient
from app.neuroon.errors import NeuroonError, NeuroonRejected
from app.shops import Shop


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    status: str  # verified | already_verified | origin_mismatch | rejected | unavailable
    message: str
    verification_code: str | None = None


def _mismatch(shop: Shop) -> str:
    url = shop.config.shop_url
    sent = f"the storefront URL {url}" if url else "no storefront URL (NEUROON_SHOP_URL is not set)"
    return (
        f"Neuroon refused the domain (403): we sent {sent} as the domain and Origin, and it does not "
        "match the shop URL registered in Neuroon for this key. Set NEUROON_SHOP_URL (or shop_url in "
        "GATEWAY_SHOPS_FILE) to exactly the URL registered in the Neuroon dashboard, or correct the URL "
        "there (scheme, a leading www. and a trailing slash do not matter), and check the API key "
        "belongs to this shop."
    )


async def verify_domain(shop: Shop, neuroon: NeuroonClient) -> VerifyResult:
    try:
        outcome = await neuroon.verify_domain(shop)
    except NeuroonRejected as exc:
        if exc.status == 403:
            return VerifyResult(False, "origin_mismatch", _mismatch(shop))
        if exc.status == 401:
            return VerifyResult(
                False, "rejected", "Neuroon refused the Shop API Key (401): check NEUROON_API_KEY"
            )
        return VerifyResult(False, "rejected", f"Neuroon refused the verification: {exc.message}")
    except NeuroonError as exc:
        return VerifyResult(False, "unavailable", f"Neuroon could not be reached: {exc.message}")
    if outcome.already_verified:
        return VerifyResult(True, "already_verified", f"the domain of shop {shop.id} is already verified")
    code = outcome.data.verification_code if outcome.data else None
    return VerifyResult(True, "verified", f"the domain of shop {shop.id} is verified", code)
