"""`python -m simulator`: see `simulator.cli`."""
from simulator.cli import run

run()
