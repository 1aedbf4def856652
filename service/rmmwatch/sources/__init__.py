"""Sources: where raw messages come from (synthetic, file/stdin replay, Kafka, Event Hubs).

Each source implements ``sources/base.py``'s protocol; ``wiring.py`` builds the one ``--source`` names.
"""
