"""Settings for every command, assembled in one place: Foyle's config, then flags.

`foylectl run`, `analyze`, `learn`, `get` and `operator` all build their Settings
here, and so does the operator when kopf loads it without `foylectl`
(`operator.settings_from_env` turns its environment into the same flags), so
a setting added for one command cannot be missed by another.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from controller.errors import CommandError, UsageError
from controller.settings import (
    Settings,
    default_log_dirs,
    default_log_writers,
    default_state_dir,
)
from controller.store.files import make_private_dirs, world_writable_warning

if TYPE_CHECKING:
    from controller.foyleconfig import FoyleConfig, Provider

log = logging.getLogger("foylectl")


def state_dir_of(args: argparse.Namespace) -> Path:
    path = Path(args.state_dir).expanduser() if args.state_dir else default_state_dir()
    warning = world_writable_warning(path)
    if warning:
        print(f"foylectl: warning: {warning}", file=sys.stderr)
    return path


def writable_state_dir(path: Path) -> Path:
    try:
        make_private_dirs(path)
    except OSError as err:
        raise CommandError(f"cannot create the state dir {path}: {err.strerror}") from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise CommandError(f"the state dir {path} is not writable")
    return path


def foyle_config_of(args: argparse.Namespace) -> FoyleConfig | None:
    """Foyle's config (issue 11), for commands that learn or read logs; None for the others."""
    if not hasattr(args, "foyle_config"):
        return None
    from controller.foyleconfig import FoyleConfigError, load

    try:
        config = load(args.foyle_config)
    except FoyleConfigError as err:
        raise UsageError(str(err)) from err
    if args.foyle_config and not config.found:
        log.warning("Foyle's config %s does not exist; using Foyle's defaults", config.path)
    for note in config.notes:
        log.warning("Foyle's config %s: %s", config.path, note)
    return config


def settings_from(
    args: argparse.Namespace, *, need_logs: bool, create_default_dirs: bool = False
) -> Settings:
    settings = Settings(state_dir=state_dir_of(args))
    foyle = foyle_config_of(args)
    if foyle is not None:
        settings.training_dirs = list(foyle.training_dirs)
        settings.embedding_provider = foyle.provider
    settings.embedding_provider = provider_from(settings.embedding_provider, args)
    if getattr(args, "store", None):
        settings.store = args.store
        if args.namespace is not None and args.store != "kube":
            raise UsageError(
                "-n/--namespace is for --store kube; the sqlite store has no namespaces"
            )
        settings.namespace = args.namespace or settings.namespace
    if need_logs:
        explicit = bool(args.logs)
        dirs = (
            [Path(d).expanduser().absolute() for d in args.logs]
            if explicit
            else default_log_dirs(foyle.log_dirs if foyle else ())
        )
        missing = [d for d in dirs if not d.is_dir()]
        if explicit and missing:
            raise UsageError(f"log directory {missing[0]} does not exist or is not a directory")
        if create_default_dirs and not explicit:
            # Foyle and RunMe create these when they first log; watching them from the start
            # means their first lines are seen the moment they are written.
            for directory in missing:
                try:
                    make_private_dirs(directory)
                    writer = default_log_writers().get(directory, "a writer")
                    log.info("created %s (where %s writes its logs)", directory, writer)
                except OSError as err:
                    log.warning("cannot create %s: %s", directory, err.strerror)
        settings.log_dirs = [d for d in dirs if d.is_dir()]
        if not settings.log_dirs:
            raise UsageError(
                "none of the default log directories exists ("
                + ", ".join(str(d) for d in dirs)
                + "); name one with --logs DIR"
            )
    if getattr(args, "training_dir", None):
        settings.training_dirs = [Path(d).expanduser() for d in args.training_dir]
    settings.apply_flags(vars(args))
    return settings


def provider_from(base: Provider | None, args: argparse.Namespace) -> Provider | None:
    """Foyle's config's embedding provider, with the --openai-* flags overriding it."""
    from controller.foyleconfig import Provider

    key = getattr(args, "openai_api_key_file", None)
    url = getattr(args, "openai_base_url", None)
    if key is None and url is None:
        return base
    if base is not None and base.kind == "openai":
        return Provider("openai", key or base.api_key_file, url or base.base_url)
    return Provider("openai", key, url or "")
