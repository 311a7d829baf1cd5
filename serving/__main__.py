"""`python -m serving`: the serving process on 127.0.0.1:8000, from the main job's outputs.

    python -m pipelines.recommend      # learns, publishes models and profiles to out/recommend/
    python -m serving                  # serves them: http://127.0.0.1:8000/openapi.json
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from serving.app import Settings, create_app

DEFAULT_OUTPUT = "out/recommend"  # where the main job publishes by default


def parse_args(argv=None) -> tuple[argparse.Namespace, Settings]:
    parser = argparse.ArgumentParser(prog="python -m serving", description=(
        "Serve predictions over HTTP from the newest verified model version in a registry and the "
        "profiles in an online store, as the learning plane publishes them."))
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    parser.add_argument("--registry", default=f"{DEFAULT_OUTPUT}/registry.sqlite",
                        help="the model registry (default: %(default)s, the main job's)")
    parser.add_argument("--online_store", default=f"{DEFAULT_OUTPUT}/online.sqlite",
                        help="the online store of profiles (default: %(default)s, the main job's)")
    parser.add_argument("--model", default="recommender", help="the model key to serve (default: %(default)s)")
    parser.add_argument("--key_file", help="keyring file that checks model versions (default: "
                                           "$STREAMML_STATE_KEY, else the key file beside the registry)")
    parser.add_argument("--poll_s", type=float, default=0.2,
                        help="seconds between looks for a newer model version (default: %(default)s)")
    args = parser.parse_args(argv)
    for flag in ("registry", "online_store"):
        if not os.path.isfile(getattr(args, flag)):
            parser.error(f"no file --{flag} {getattr(args, flag)}: the learning plane publishes it "
                         "(python -m pipelines.recommend writes out/recommend/registry.sqlite and online.sqlite)")
    if args.poll_s <= 0:
        parser.error("--poll_s must be > 0")
    return args, Settings(os.path.abspath(args.registry), os.path.abspath(args.online_store), args.model,
                          args.key_file, args.poll_s)


def main(argv=None) -> int:
    args, settings = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    print(f"serving {settings.model} from {settings.registry} at http://{args.host}:{args.port} "
          f"(API schema: /openapi.json; Ctrl-C stops)", file=sys.stderr, flush=True)
    uvicorn.run(create_app(settings), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
