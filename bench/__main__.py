"""`python -m bench`: the foundation benchmark (see bench/foundation.py)."""

from bench.foundation import main

main()
