"""Behaviour behind the blocks: database sources and storage destinations.

Each kind of adapter implements one contract (:mod:`.source`, :mod:`.destination`), is found by name
through :mod:`.registry`, and is proven by one shared conformance suite in :mod:`.testing`.
"""
