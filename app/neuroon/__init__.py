"""Everything we know about Neuroon: widget-token signing, the typed client, its errors."""
