"""Services of the preference center: plain functions over a session and plain values.

They validate their input (raising :class:`prefcenter.errors.InvalidInput`), flush, and
never commit: the caller's transaction (a request, a task, a CLI command) decides.
"""
