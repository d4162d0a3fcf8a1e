"""`zerosearch serve`: any search backend behind a Search-R1-compatible `/retrieve` endpoint.

    zerosearch serve --backend bm25 --port 8000
    ZEROSEARCH_API_KEY=SECRET zerosearch serve --backend simulator --config sim.yaml --batch-window-ms 10
    zerosearch serve --backend bm25 --api-key-file ~/.config/zerosearch/key

Trainers built on Search-R1, verl's search tool, SkyRL-gym or GEM point their search URL at
`http://127.0.0.1:PORT/retrieve`. A trainer moves the simulator's noise curriculum with
`POST /set_step {"step": n}`. The simulator grounds its documents as the env does: with the
built-in world's default knowledge ("world") a body needs only the query; `-o knowledge=answer_hint`
needs per-query `golden_answers` (and `supporting_titles` to be hop-aware). Each call draws
useful/noisy anew unless the body sends an `episode_id` (see `zerosearch_env.server`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

API_KEY_ENV = "ZEROSEARCH_API_KEY"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", default=None,
                        help="backend name (bm25, simulator, dense, retriever, web) or 'module:Class' "
                             "with a from_config classmethod; default: the config's backend, else bm25")
    parser.add_argument("--config", default=None, help="EnvConfig YAML/JSON file (its env: section)")
    parser.add_argument("--option", "-o", action="append", default=[], metavar="KEY=VALUE",
                        help="a backend option (value parsed as JSON when it parses); repeatable")
    parser.add_argument("--dataset", default=None, help="dataset for the corpus (default: the config's, 'world')")
    parser.add_argument("--world-seed", type=int, default=None, help="seed of the built-in world")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--api-key-file", default=None, metavar="PATH",
                        help="require the key stored in this file (first line) from clients "
                             "(Authorization: Bearer KEY or X-API-Key); default: $" + API_KEY_ENV + ", else no key")
    parser.add_argument("--api-key", default=None,
                        help="require this key; risky: a key on the command line is visible to other users "
                             "of the machine (ps, /proc) and stays in shell history; prefer --api-key-file "
                             "or $" + API_KEY_ENV)
    parser.add_argument("--batch-window-ms", type=float, default=5.0,
                        help="how long to gather concurrent requests into one backend call")
    parser.add_argument("--max-batch", type=int, default=64, help="most queries in one backend call")
    parser.add_argument("--max-concurrency", type=int, default=256,
                        help="requests in flight before the server answers 503")
    parser.add_argument("--max-body-bytes", type=int, default=1 << 20)
    parser.add_argument("--max-queries", type=int, default=1024, help="most queries in one request")
    parser.add_argument("--default-topk", type=int, default=None, help="topk when a request sends none")
    parser.add_argument("--log-level", default="warning")


def resolve_api_key(args: argparse.Namespace) -> str | None:
    """The key clients must send: from --api-key-file, else --api-key, else $ZEROSEARCH_API_KEY, else none."""
    if args.api_key_file and args.api_key:
        raise ValueError("give --api-key-file or --api-key, not both")
    if args.api_key_file:
        try:
            lines = Path(args.api_key_file).read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise ValueError(f"cannot read --api-key-file {args.api_key_file}: {e.strerror}") from None
        key = lines[0].strip() if lines else ""
        if not key:
            raise ValueError(f"--api-key-file {args.api_key_file} is empty")
        return key
    return args.api_key or os.environ.get(API_KEY_ENV) or None


def parse_options(items: list[str]) -> dict:
    """`["k=v", ...]` -> dict, each value read as JSON when it parses, else kept as text."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def build_backend(name: str | None, config_path: str | None = None, options: dict | None = None, **overrides):
    """Build a backend from a registry name or 'module:Class', configured by an EnvConfig."""
    import importlib

    from zerosearch_env.config import EnvConfig
    from zerosearch_env.search import make_backend

    config = EnvConfig.from_file(config_path) if config_path else EnvConfig()
    updates = {k: v for k, v in overrides.items() if v is not None}
    if options:
        updates["backend_options"] = {**config.backend_options, **options}
    if name and ":" not in name:
        updates["backend"] = name
    config = config.updated(**updates) if updates else config
    if name and ":" in name:
        module, _, cls = name.partition(":")
        return getattr(importlib.import_module(module), cls).from_config(config), config
    return make_backend(config), config


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from zerosearch_env.server import ServerLimits, create_app
    except ImportError as e:
        print(f"zerosearch serve: {e}; pip install 'zerosearch-env[server]'", file=sys.stderr)
        return 2
    try:
        api_key = resolve_api_key(args)
    except ValueError as e:
        print(f"zerosearch serve: {e}", file=sys.stderr)
        return 2
    try:
        backend, config = build_backend(args.backend, args.config, parse_options(args.option),
                                        dataset=args.dataset, world_seed=args.world_seed)
    except (ValueError, ImportError, FileNotFoundError, AttributeError) as e:
        print(f"zerosearch serve: {e}", file=sys.stderr)
        return 2
    try:
        if min(args.max_body_bytes, args.max_queries) < 1 or not 0 < args.port < 65536:
            raise ValueError("--max-body-bytes and --max-queries must be >= 1, --port in 1..65535")
        limits = ServerLimits(max_body_bytes=args.max_body_bytes, max_queries=args.max_queries,
                              default_topk=args.default_topk or config.top_k)
        app = create_app(backend, api_key=api_key, batch_window_ms=args.batch_window_ms,
                         max_batch=args.max_batch, max_concurrency=args.max_concurrency, limits=limits)
    except ValueError as e:
        backend.close()
        print(f"zerosearch serve: {e}", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print("zerosearch serve: warning: listening beyond loopback without an API key", file=sys.stderr)
    print(f"zerosearch serve: backend {backend.name!r} on http://{args.host}:{args.port}/retrieve", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    finally:
        backend.close()
    return 0
