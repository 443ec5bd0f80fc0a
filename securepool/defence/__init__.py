"""Defences the coordinator applies to a group's aggregate (the ``[defence]`` section).

They act only on what the coordinator legitimately holds in every aggregation mode: the
aggregate of each group (never an individual update) and its own held-out records.
"""
