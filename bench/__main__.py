"""`python -m bench`: the foundation benchmark (see bench/foundation.py).
The others run on their own: `python -m bench.gateway`, `python -m
bench.scheduling`, `python -m bench.feed` (feed graph: Neo4j and SQLite)."""

from bench.foundation import main

main()
