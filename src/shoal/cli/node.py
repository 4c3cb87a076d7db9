"""`shoal serve`, `shoal status` and `shoal cluster status`: a node, and what it holds."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from shoal.cli.format import print_table
from shoal.cli.options import node_client, remote_options

__all__ = ["add_node_commands"]


def _serve(args: argparse.Namespace) -> int:
    from shoal.node.config import load_settings, settable_fields
    from shoal.server.serve import serve

    flags = {f.name: getattr(args, f.name) for f in settable_fields()}
    settings = load_settings(args.config, os.environ, flags)
    return serve(settings)


def _status(args: argparse.Namespace) -> int:
    status = node_client(args).call("GET", "/v1/status")
    state = "ready" if status["ready"] else "not ready"
    print(
        f"shoal {status['shoal']} at {status['address']}: {state}, "
        f"up {status['uptime_seconds']:.0f} s, archive {status['archive'] or 'off'}"
    )
    rows = [
        (
            d["name"],
            d["version"],
            d.get("archive_lag", "-"),
            d.get("archive_failures", "-"),
            d.get("archive_error") or "",
        )
        for d in status["databases"]
    ]
    print_table(["database", "version", "archive lag", "failures", "last error"], rows)
    return 0


def _cluster_status(args: argparse.Namespace) -> int:
    state = node_client(args).call("GET", "/v1/cluster")
    if not state["clustered"]:
        print(f"{args.url} is a single node (no --control-plane): see `shoal status`")
        return 0
    nodes = [
        (n["id"], n["url"], "leaving" if n["leaving"] else "live", n["databases"], n["leading"])
        for n in state["nodes"]
    ]
    print_table(["node", "url", "state", "databases", "leading"], nodes)
    print()
    rows = []
    for d in state["databases"]:
        copies = ", ".join(
            f"{r['node']}@{r['version']}" + (f" (lag {r['lag']})" if r["lag"] else "")
            for r in d["replicas"]
        )
        rows.append(
            (d["name"], d["durability"], d["leader"] or "-", d["epoch"] or "-", d["head"], copies)
        )
    columns = ["database", "durability", "leader", "epoch", "log head", "copies (version, lag)"]
    print_table(columns, rows)
    problems = [
        (d["name"], r["node"], r["problem"])
        for d in state["databases"]
        for r in d["replicas"]
        if r.get("problem")
    ]
    if problems:
        print()
        print_table(["database", "node", "problem (retrying, with backoff)"], problems)
    return 0


def _add_serve(commands: Any) -> None:
    from shoal.node.config import Settings, env_name, settable_fields

    serve = commands.add_parser(
        "serve",
        help="run a node: many databases over HTTP (native and rqlite APIs)",
        description="Run a node serving its databases over HTTP: the native API under /v1 and "
        "the rqlite API under /db. Settings come from defaults, then --config, then SHOAL_* "
        "environment variables, then these flags. SIGTERM or SIGINT stops it cleanly.",
    )
    serve.add_argument("--config", type=Path, help="a TOML file of settings (keys as below)")
    defaults = Settings()
    for f in settable_fields():
        default = getattr(defaults, f.name)
        shown = "" if default is None else f"; default {default}"
        flag = "--" + f.name.replace("_", "-")
        help_text = f"{f.metadata['help']} (env {env_name(f.name)}{shown})"
        if f.type == "bool":
            serve.add_argument(
                flag, dest=f.name, action="store_const", const="true", help=help_text
            )
        else:
            serve.add_argument(flag, dest=f.name, metavar=f.name.upper(), help=help_text)
    serve.set_defaults(run=_serve)


def add_node_commands(commands: Any) -> None:
    """Registers `serve`, `status` and `cluster` on the `shoal` parser's subcommands."""
    _add_serve(commands)
    status = commands.add_parser(
        "status",
        help="show a node's databases, versions and archive lag",
        description="Show a running node's state: each open database's version, and how "
        "far its archive is behind (versions not yet archived, failed rounds in a row).",
    )
    remote_options(status)
    status.set_defaults(run=_status)

    cluster = commands.add_parser(
        "cluster",
        help="show a cluster's nodes, databases, leaders, versions and lag",
        description="Inspect the cluster that a node belongs to.",
    )
    actions = cluster.add_subparsers(dest="action", required=True, metavar="ACTION", help="status")
    cluster_status = actions.add_parser(
        "status",
        help="nodes, and each database's leader, log head and copies",
        description="Show the live nodes, and for each database its durability, leader, "
        "epoch, the version its log ends at, and each copy's version and lag.",
    )
    remote_options(cluster_status)
    cluster_status.set_defaults(run=_cluster_status)
