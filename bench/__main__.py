"""`make bench`: run every benchmark and print each figure as a ratio against its baseline."""

from bench import catalog, tokens, webhooks

if __name__ == "__main__":
    tokens.main()
    webhooks.main()
    catalog.main()
