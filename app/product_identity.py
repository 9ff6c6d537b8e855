"""The product identity: which id names a product to Neuroon, decided once per shop for both flows.

The widget's ``neuroon_clicks`` cookie is keyed by the ``externalId`` the catalog sync sent, and a
conversion is attributed only when its ``productId`` is that same text. So one setting per shop
(``product_id_field`` in the shops file, ``GATEWAY_PRODUCT_ID_FIELD`` as the default of every shop)
decides both: the order parsers read the line's field it names, and the catalog takes the same id
from a feed (a WooCommerce or Shopify export, or the columns of a flat feed).

- ``sku``: the SKU of what was sold (Shopify variant SKU; WooCommerce product or variation SKU).
- ``variant_id``: the platform's id of what was sold (Shopify variant id; WooCommerce variation id,
  or the product id of a simple product).
- ``product_id``: the platform's product id (every variant of a product counts as the product).
"""

from __future__ import annotations

from app.settings import ProductIdentity
from app.shops import Shop

_MEANING: dict[ProductIdentity, str] = {
    "sku": "the SKU of each variant/product",
    "variant_id": "the platform id of each variant (a simple product's own id)",
    "product_id": "the platform id of each product (variants count as their product)",
}


def product_identity(shop: Shop) -> ProductIdentity:
    """The identity of ``shop``: what its conversions send as ``productId`` and its catalog as
    ``externalId``."""
    return shop.config.product_id_field


def describe(identity: ProductIdentity) -> str:
    """One line for reports: which setting, which value, what it means."""
    return f"{identity}: {_MEANING[identity]} (product_id_field / GATEWAY_PRODUCT_ID_FIELD)"
