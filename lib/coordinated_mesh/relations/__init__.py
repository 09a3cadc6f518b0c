"""Relation data: the databag base, the ``cluster`` protocol, and the telemetry interfaces.

Readers return ``(valid items, problems)`` and never raise on remote data; writers write only keys
whose value changes, application databags on the leader only. Wire formats:
``docs/reference/relations.md``.
"""
