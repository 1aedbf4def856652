"""Sinks: where alerts are delivered (stdout, JSON lines file, webhook, Kafka), and dead letters.

Each sink implements ``sinks/base.py``'s protocol; ``wiring.py`` builds those ``--sink`` and ``--dead-letter`` name.
"""
