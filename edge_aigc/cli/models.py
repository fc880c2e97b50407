"""``edge-aigc models``: the device model store (install, list, activate, rollback, remove)."""
from __future__ import annotations

import argparse

import sys
from pathlib import Path

from ..bundle import signing
from .. import zoo
from ..device.detect import profile_name_or_detect
from ..bundle.store import ModelStore, default_state_dir
from .output import human_bytes, table


def _store(args: argparse.Namespace) -> ModelStore:
    key = signing.load_public_key(args.pubkey) if getattr(args, "pubkey", None) else None
    return ModelStore(args.state_dir or default_state_dir(), public_key=key,
                      require_signature=True if getattr(args, "require_signature", False) else None)


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    rows = [(m.name, m.version, "*" if m.active else "", m.manifest.task,
             f"{m.manifest.format}/{m.manifest.recipe}", m.manifest.profile or "-",
             human_bytes(m.manifest.size_bytes)) for m in store.list()]
    if not rows:
        print(f"no models installed in {store.root}")
        return 0
    print(table(("NAME", "VERSION", "ACTIVE", "TASK", "FORMAT", "PROFILE", "SIZE"), rows))
    return 0


def _install(args: argparse.Namespace) -> int:
    bundle = Path(args.bundle)
    if not bundle.exists() and args.bundle in zoo.MODELS:  # a prebuilt model, for this device's profile
        profile = profile_name_or_detect(args.profile)
        bundle = zoo.zoo_bundle(args.bundle, profile).path
        if not args.pubkey:  # prebuilt bundles must carry the zoo's signature
            args.pubkey, args.require_signature = str(zoo.zoo_public_key_path()), True
        print(f"installing prebuilt {args.bundle} for profile {profile}", file=sys.stderr)
    m = _store(args).install(bundle, activate=not args.no_activate)
    state = "active" if m.active else "installed, not active"
    print(f"{m.name} {m.version} {state} ({m.path})")
    return 0


def _available(args: argparse.Namespace) -> int:
    rows = [(b.model, b.profile, zoo.MODELS[b.model].split(":")[0], human_bytes(b.path.stat().st_size))
            for b in zoo.zoo_bundles()]
    print(table(("MODEL", "PROFILE", "TASK", "SIZE"), rows))
    return 0


def _activate(args: argparse.Namespace) -> int:
    _store(args).activate(args.name, args.version)
    print(f"{args.name} {args.version} active")
    return 0


def _rollback(args: argparse.Namespace) -> int:
    version = _store(args).rollback(args.name)
    print(f"{args.name} rolled back to {version}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    _store(args).remove(args.name, args.version)
    print(f"removed {args.name}{' ' + args.version if args.version else ''}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="install, list, activate, roll back or remove models on this device")
    p.add_argument("--state-dir", help="store location (default: $EDGE_AIGC_STATE_DIR, "
                                       "$STATE_DIRECTORY, /var/lib/edge-aigc as root, else ~/.local/state/edge-aigc)")
    p.set_defaults(func=_list)
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    a = actions.add_parser("list", help="installed models and versions (default)")
    a.set_defaults(func=_list)
    a = actions.add_parser("install", help="verify a .eaigc bundle (or a prebuilt model) and install it atomically")
    a.add_argument("bundle", help="path to a .eaigc bundle, or a prebuilt model name (see: models available)")
    a.add_argument("--profile", help="prebuilt models: which profile's bundle (default: detected)")
    a.add_argument("--no-activate", action="store_true", help="install without making it active")
    a.add_argument("--pubkey", help="Ed25519 public key the bundle must be signed with")
    a.add_argument("--require-signature", action="store_true", help="refuse unsigned bundles")
    a.set_defaults(func=_install)
    a = actions.add_parser("available", help="prebuilt models shipped with edge-aigc, per profile")
    a.set_defaults(func=_available)
    a = actions.add_parser("activate", help="make an installed version active")
    a.add_argument("name")
    a.add_argument("version")
    a.set_defaults(func=_activate)
    a = actions.add_parser("rollback", help="make the previous version active again")
    a.add_argument("name")
    a.set_defaults(func=_rollback)
    a = actions.add_parser("remove", help="remove an inactive version, or the whole model")
    a.add_argument("name")
    a.add_argument("version", nargs="?")
    a.set_defaults(func=_remove)
