"""Batch serving: every known user's top items, computed ahead with a registry model version and
written to the batch store as one batch that becomes visible whole.

    python -m pipelines.batch_serve                       # after python -m pipelines.recommend
    python -m pipelines.batch_serve --version production --candidates 0 --k 50 --devices ,tv,mobile
    python -m serving --batch_store out/recommend/toplists.sqlite --batch_first

For every user of the online store, it ranks the `--candidates` most popular items as of
`--as_of` (0: the whole catalogue) with the model version, exactly as the server would rank them
then (`core.ranking`), and keeps the best `--k` per user and device. The launcher begins a batch,
the Beam job stages the lists, the launcher commits the batch: servers reading the store go on
answering from the previous batch until the commit, then from the new one, never from a mix.
"""
from __future__ import annotations

import os
import sys
import time

import apache_beam as beam

from core.decoding import event_time_arg
from pipelines.console import QUIET, ArgumentParser, UserError, add_verbose_flag, main
from pipelines.options import pipeline_options, runner_name
from stores.online import open_online_store
from stores.registry import STAGES, UnknownVersion, open_registry
from stores.toplists import open_toplists
from transforms.recsys.batch_serving import RankUsers, StageTopLists


def parse_args(argv=None):
    parser = ArgumentParser(prog="python -m pipelines.batch_serve", description=__doc__.split("\n\n")[0],
                            epilog="Any other flag goes to Beam (e.g. --runner).")
    parser.add_argument("--registry", default="out/recommend/registry.sqlite",
                        help="The model registry: a SQLite file or postgresql:// URL (default: %(default)s).")
    parser.add_argument("--online_store", default="out/recommend/online.sqlite",
                        help="The profiles: a SQLite file or redis:// URL (default: %(default)s).")
    parser.add_argument("--store", default="out/recommend/toplists.sqlite",
                        help="The batch store: a SQLite file or postgresql:// URL (default: %(default)s).")
    parser.add_argument("--model", default="recommender", help="Model key (default: %(default)s).")
    parser.add_argument("--version", default="latest",
                        help=f"latest, a stage ({', '.join(STAGES)}) or a version number (default: %(default)s).")
    parser.add_argument("--as_of", type=event_time_arg,
                        help="The time the features are as of: epoch ms or ISO-8601 (default: now); not "
                             "before the newest event in the online store.")
    parser.add_argument("--candidates", type=int, default=100,
                        help="Rank the N most popular items; 0 ranks the whole catalogue (default: %(default)s).")
    parser.add_argument("--k", type=int, default=20, help="Items kept per user (default: %(default)s).")
    parser.add_argument("--devices", default="",
                        help="Comma-separated devices to rank for; the empty name is a list for no particular "
                             "device (default: one list per user, for no device).")
    parser.add_argument("--key_file", help="Keys that check model versions (default: $STREAMML_STATE_KEY, "
                                           "else <registry>.key).")
    add_verbose_flag(parser)
    args, beam_args = parser.parse_job_args(argv)
    if args.candidates < 0 or args.k < 1:
        parser.error("--candidates must be >= 0 and --k >= 1")
    args.devices = list(dict.fromkeys(d.strip() for d in args.devices.split(",")))
    for flag in ("registry", "online_store"):
        where = getattr(args, flag)
        if "://" not in where and not os.path.isfile(where):
            parser.error(f"no file --{flag} {where}: the learning plane publishes it (python -m pipelines.recommend)")
    return args, beam_args


def run(argv=None, console=QUIET) -> dict:
    """Ranks, stages and commits a batch; returns what it committed."""
    args, beam_args = parse_args(argv)
    version = _version(args)
    store = open_online_store(args.online_store)
    try:
        users, newest = store.count("user"), store.clock()
    finally:
        store.close()
    if users == 0:
        raise UserError(f"no user profile in {args.online_store}: nothing to rank")
    as_of = int(time.time() * 1000) if args.as_of is None else args.as_of
    if newest is not None and as_of < newest:
        raise UserError(f"--as_of {as_of} is before the newest event in {args.online_store} ({newest}): "
                        "the features would hold events from after it")
    if "://" not in args.store:
        os.makedirs(os.path.dirname(args.store) or ".", exist_ok=True)
    toplists = open_toplists(args.store)
    batch_id = toplists.begin(args.model, version, as_of)
    options = pipeline_options(beam_args)
    console.say(f"ranking for {users:,} users with {args.model} v{version}, features as of {as_of} ms, "
                f"into batch {batch_id} of {toplists.where}, on {runner_name(options)}")
    started = time.monotonic()
    with beam.Pipeline(options=options) as p:
        (p | "Rank" >> RankUsers(args.registry, args.model, version, args.online_store, as_of, args.candidates,
                                 args.k, args.devices, args.key_file)
           | "Stage" >> beam.ParDo(StageTopLists(args.store, batch_id)))
    try:
        batch = toplists.commit(batch_id)
    except ValueError as e:
        raise UserError(f"{e} (the job ranked no user)") from None
    finally:
        toplists.close()
    console.say(f"batch {batch.batch_id} committed: {batch.lists:,} lists of {args.model} v{version} "
                f"in {time.monotonic() - started:.1f} s; serve them with python -m serving --batch_store {args.store}")
    return {"batch_id": batch.batch_id, "lists": batch.lists, "model": args.model, "model_version": version,
            "features_ms": as_of, "store": args.store}


def _version(args) -> int:
    """The version number that --version names, checked to exist."""
    registry = open_registry(args.registry)
    try:
        if args.version.isdigit():
            found = registry.get(args.model, int(args.version))
        elif args.version == "latest" or args.version in STAGES:
            found = registry.latest(args.model, None if args.version == "latest" else args.version)
        else:
            raise UserError(f"--version {args.version!r}: expected latest, {', '.join(STAGES)} or a number")
    except UnknownVersion as e:
        raise UserError(str(e)) from None
    finally:
        registry.close()
    if found is None:
        raise UserError(f"no {args.version} version of model {args.model!r} in {args.registry}")
    return found.version


if __name__ == "__main__":
    # The importable module, not __main__: workers in another process import `pipelines.batch_serve`.
    from pipelines import batch_serve
    sys.exit(main(batch_serve.run))
