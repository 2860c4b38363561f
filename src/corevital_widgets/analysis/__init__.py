"""Judgements over traces, numpy only (imports ``trace/``, never the engine, batch or widgets):
the model's normal (baseline.py), the verdict, layer blame and narrative (verdict.py), finding
the baseline of a model by fingerprint (registry.py), the built-in ordinary prompts."""
