"""Peers of rmmwatch for ``load/bench.py``: the same job in other frameworks, and the read ceilings.

These modules run in a separate virtualenv (``${RMMWATCH_CACHE:-~/.cache/rmmwatch}/peers-venv``, created by
``python -m load.bench``), never in the project's: quixstreams, faust-streaming and confluent-kafka are not
rmmwatch dependencies. Each job reads one topic to its known end and writes one JSON result file
(:func:`load.peers.common.write_result`): seconds and CPU seconds from its first record to its last, peak
RSS, and what it computed, which the bench compares with rmmwatch's ``hunt`` answer.
"""
