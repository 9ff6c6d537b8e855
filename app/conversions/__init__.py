"""Order webhooks to Neuroon conversions: intake per platform, attribution, durable queue, delivery."""
