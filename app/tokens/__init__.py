"""The widget-token capability: signing, the two-level cache, and the public endpoint."""
