"""Catalog sync, deletions and domain verification, done the way Neuroon's docs warn they must be.

feed.py reads feeds (streaming), mapping.py turns a row into Neuroon's fields, normalise.py applies the
documented rules, plan.py orders variants after parents and cuts batches, sync.py sends them (delta,
drift, ledger), reconcile.py deletes, verify.py verifies the domain, routes.py is the admin API.
"""
