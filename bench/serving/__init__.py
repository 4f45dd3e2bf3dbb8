"""Serving benchmark: simulated annotators against our stack and Label Studio (issue 9)."""
