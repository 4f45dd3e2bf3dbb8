"""Soak with faults: 32 simulated annotators and a judge campaign running rounds against a
private PostgreSQL, Redis, gunicorn and one Celery worker, while the worker is SIGKILLed and
Redis and PostgreSQL are restarted. Run ``python -m bench.soak --help``."""
