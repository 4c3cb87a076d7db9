"""The flags several commands take, each with its environment variable and default."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shoal.client.remote import NodeClient

__all__ = [
    "DEFAULT_URL",
    "archive_option",
    "data_dir_option",
    "env_option",
    "node_client",
    "remote_options",
    "token_of",
    "token_options",
]

DEFAULT_DATA_DIR = "shoal-data"
DEFAULT_URL = "http://127.0.0.1:4001"
DEFAULT_ARCHIVE = "shoal-data/archive"


def env_option(
    parser: argparse.ArgumentParser,
    flag: str,
    env: str,
    help_text: str,
    default: str | None = None,
    kind: Callable[[str], Any] = str,
) -> None:
    """A flag whose default comes from an environment variable, then `default`;
    its help says both."""
    value = os.environ.get(env) or default
    shown = "" if default is None else f"; default {default}"
    parser.add_argument(
        flag,
        type=kind,
        default=None if value is None else kind(value),
        help=f"{help_text} (env {env}{shown})",
    )


def data_dir_option(
    parser: argparse.ArgumentParser, help_text: str = "the node's data directory"
) -> None:
    """--data-dir, from SHOAL_DATA_DIR, then ./shoal-data, as `shoal serve` takes it."""
    env_option(parser, "--data-dir", "SHOAL_DATA_DIR", help_text, DEFAULT_DATA_DIR, Path)


def token_options(parser: argparse.ArgumentParser) -> None:
    """--token, and --data-dir for the local admin credential sent when there is none."""
    env_option(parser, "--token", "SHOAL_TOKEN", "bearer token")
    data_dir_option(
        parser,
        "the node's data directory, when it runs on this machine: without a token, its "
        "local admin credential is sent",
    )


def remote_options(parser: argparse.ArgumentParser) -> None:
    """--url of the node a command talks to, and how it authenticates."""
    env_option(parser, "--url", "SHOAL_URL", "the node's URL", DEFAULT_URL)
    token_options(parser)


def archive_option(parser: argparse.ArgumentParser) -> None:
    archive_help = "s3://bucket/prefix, file:///path or a path"
    env_option(parser, "--archive", "SHOAL_ARCHIVE", archive_help, DEFAULT_ARCHIVE)


def token_of(args: argparse.Namespace) -> str | None:
    """The token a command sends: --token (or SHOAL_TOKEN), else the local admin
    credential of the node whose data directory is --data-dir, if this user can read it."""
    from shoal.node.auth import local_admin_secret  # the server's modules load slowly

    token: str | None = args.token or local_admin_secret(args.data_dir)
    return token


def node_client(args: argparse.Namespace) -> NodeClient:
    """A client of the node that --url names, sending the token of `token_of`."""
    from shoal.client.remote import NodeClient

    return NodeClient(args.url, token_of(args))
