"""The local Neuroon sandbox: an ASGI app that behaves like Neuroon's Plugin API, for demo mode and tests.

``create_sandbox([SandboxShop(id, key, shop_url)])`` returns a ``Sandbox``: ``.app`` is the ASGI app
(in-process through ``httpx.ASGITransport``, or served by ``neuroon-gateway sandbox``), the rest are its
controls. Never used unless asked for.
"""

from app.sandbox.app import create_sandbox
from app.sandbox.control import Fault, RecordedRequest, Sandbox
from app.sandbox.state import SandboxShop, load_shops_toml

__all__ = ["Fault", "RecordedRequest", "Sandbox", "SandboxShop", "create_sandbox", "load_shops_toml"]
