"""The entry points' logging: quiet by default, everything with `--verbose`.

Installed when `pipelines` is imported, before Beam is: Beam logs a warning on the root logger
while it is imported (no apitools for BigQuery) and, through that, would set up a handler that
prints its own INFO chatter (hundreds of "Converting string literal type hint" lines) on every
command. Quiet, a job shows only warnings and errors of its own and Beam's errors; what it is
doing, it says through `pipelines.console`.
"""
import logging

_IMPORT_NOISE = ("apitools not found",)


class _Quiet(logging.Filter):
    verbose = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.verbose:
            return True
        if record.name.startswith("apache_beam") and record.levelno < logging.ERROR:
            return False
        return not (record.name == "root" and str(record.msg).startswith(_IMPORT_NOISE))


_QUIET = _Quiet()


def install() -> None:
    """A stderr handler on the root logger (unless one is there, e.g. pytest's), quiet."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    for handler in root.handlers:
        if _QUIET not in handler.filters:
            handler.addFilter(_QUIET)
    if root.level == logging.NOTSET or root.level < logging.WARNING:
        root.setLevel(logging.WARNING)


def set_verbose(verbose: bool) -> None:
    """`--verbose`: every logger at INFO, Beam's included; else quiet."""
    _QUIET.verbose = verbose
    logging.getLogger().setLevel(logging.INFO if verbose else logging.WARNING)
