"""Trace storage, queries and export (numpy only; no torch)."""
