"""``python -m bench``: every benchmark in one run, one table (see bench/run.py)."""

from bench.run import main

main()
