"""A manual rollback: a retained version of a model served again, as the newest version.

    python -m pipelines.rollback --registry out/recommend/registry.sqlite --model recommender --list
    python -m pipelines.rollback --registry out/recommend/registry.sqlite --model recommender --to 7

`--to V` publishes version V's signed bytes again under the next version number (version ids
only grow), with `rollback_to` and `rollback_reason` in its metrics. Servers switch to it at
their next poll, as to any new version; a learner that is running adopts it as its state before
it learns on (`core.learning.Learner`), so that its next version starts from V. `--list` shows the
retained versions: number, labels learned, pins and stage, and rollbacks.

The bytes are copied, not loaded: this command needs no signing key, and the servers and the
learner check V's signature as they would have.
"""
from __future__ import annotations

import datetime
import os
import sys

from pipelines.console import QUIET, ArgumentParser, UserError, main
from stores.registry import open_registry


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m pipelines.rollback", description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", required=True, metavar="LOCATION",
                        help="The model registry (a SQLite file or postgresql://...).")
    parser.add_argument("--model", default="recommender", help="Model key (default: %(default)s).")
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--to", type=int, metavar="VERSION", help="Serve this retained version again.")
    action.add_argument("--list", action="store_true", help="List the retained versions.")
    parser.add_argument("--reason", default="manual", help="Why, kept in the new version's metrics.")
    return parser.parse_args(argv)


def run(argv=None, console=QUIET):
    args = parse_args(argv)
    if "://" not in args.registry and not os.path.isfile(args.registry):
        raise UserError(f"no registry at --registry {args.registry}")
    try:
        registry = open_registry(args.registry)
    except (ValueError, ConnectionError) as e:
        raise UserError(f"--registry {args.registry}: {e}") from None
    try:
        if args.list:
            for line in listing(registry, args.model):
                console.say(line)
            return None
        version = roll_back(registry, args.model, args.to, args.reason)
        console.say(f"{args.model} v{version.version} = v{args.to} ({args.reason}): servers switch at their next "
                    "poll, a running learner learns on from it")
        return version
    finally:
        registry.close()


def roll_back(registry, model_key: str, to: int, reason: str = "manual"):
    """Publishes version `to` of `model_key` again as the newest; the new `Version`."""
    try:
        target = registry.get(model_key, to)
    except LookupError:
        kept = ", ".join(str(v.version) for v in registry.versions(model_key)) or "none"
        raise UserError(f"no version {to} of {model_key!r} is retained (retained: {kept})") from None
    metrics = {k: v for k, v in target.metrics.items() if not k.startswith("rollback")}
    return registry.publish(model_key, registry.blob(model_key, to), step=target.step, clock_ms=target.clock_ms,
                            watermark_ms=target.watermark_ms,
                            metrics={**metrics, "rollback_to": to, "rollback_reason": f"manual: {reason}"})


def listing(registry, model_key: str) -> list[str]:
    versions = registry.versions(model_key)
    if not versions:
        raise UserError(f"no version of {model_key!r} in the registry")
    lines = [f"{'version':>7}  {'labels':>9}  published            pinned / stage"]
    for v in versions:
        published = datetime.datetime.fromtimestamp(v.published_ms / 1000).strftime("%Y-%m-%d %H:%M:%S")
        notes = [n for n in (v.pinned, v.stage) if n]
        if "rollback_to" in v.metrics:
            notes.append(f"rollback to v{v.metrics['rollback_to']} ({v.metrics.get('rollback_reason')})")
        lines.append(f"{v.version:>7}  {v.step:>9,}  {published}  {'; '.join(notes)}")
    return lines


if __name__ == "__main__":
    sys.exit(main(run))
