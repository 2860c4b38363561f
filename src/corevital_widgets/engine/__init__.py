"""The instrumented generation engine (torch + transformers)."""
