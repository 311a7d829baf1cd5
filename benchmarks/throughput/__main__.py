"""`python -m benchmarks.throughput ...`: see `benchmarks.throughput.cli`."""
from benchmarks.throughput.cli import main

if __name__ == "__main__":
    main()
