"""Model factories (`MODULE:FUNCTION`), the default model zoo and signed model state."""
