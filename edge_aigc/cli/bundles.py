"""``edge-aigc keygen | inspect | verify``: signing keys and bundle files."""
from __future__ import annotations

import argparse
import json

from .. import signing
from ..bundle import inspect_bundle, load_bundle
from .output import human_bytes, table


def _keygen(args: argparse.Namespace) -> int:
    key_path, pub_path = signing.generate_keypair(args.prefix, overwrite=args.force)
    key_id = signing.key_id(signing.load_public_key(pub_path))
    print(f"private key: {key_path} (keep it off devices; mode 0600)")
    print(f"public key:  {pub_path} (put it on devices; key id {key_id})")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    info = inspect_bundle(args.bundle)
    m = info.manifest
    if args.json:
        print(m.to_json().decode(), end="")
        return 0
    rows = [("name", m.name), ("version", m.version), ("task", m.task), ("format", m.format),
            ("profile", m.profile or "-"), ("recipe", m.recipe),
            ("size", f"{human_bytes(m.size_bytes)} unpacked, {human_bytes(info.archive_bytes)} on disk"),
            ("signed", "yes (check with: edge-aigc verify --pubkey KEY)" if info.signed else "no"),
            ("source", json.dumps(m.source) if m.source else "-"),
            ("created", f"{m.created or '-'} by edge-aigc {m.converter_version or '?'}"),
            ("schema", m.schema)]
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))
    for title, section in (("task config", m.task_config), ("io", m.io), ("fidelity", m.fidelity)):
        if section:
            print(f"\n{title}:")
            print("\n".join(f"  {k}: {json.dumps(v)}" for k, v in sorted(section.items())))
    print("\n" + table(("FILE", "SHA256"), [(n, d[:16] + "…") for n, d in sorted(m.files.items())]))
    return 0


def _verify(args: argparse.Namespace) -> int:
    key = signing.load_public_key(args.pubkey) if args.pubkey else None
    with load_bundle(args.bundle, public_key=key, require_signature=args.require_signature or None) as b:
        m = b.manifest
        sig = f"valid (key {b.signer})" if b.signer else "not checked (unsigned or no --pubkey)"
        print(f"OK  {m.name} {m.version} ({m.task}, {m.format}/{m.recipe}): "
              f"{len(m.files)} file(s) match their sha256; signature {sig}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="print a bundle's manifest (does not verify)")
    p.add_argument("bundle", help=".eaigc file or extracted bundle directory")
    p.add_argument("--json", action="store_true", help="print manifest.json as stored")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("verify", help="check a bundle's files against its manifest and its signature")
    p.add_argument("bundle", help=".eaigc file or extracted bundle directory")
    p.add_argument("--pubkey", help="Ed25519 public key (PEM); when given, the bundle must be signed by it")
    p.add_argument("--require-signature", action="store_true", help="refuse unsigned bundles")
    p.set_defaults(func=_verify)

    p = sub.add_parser("keygen", help="create an Ed25519 key pair for signing bundles")
    p.add_argument("prefix", help="writes PREFIX.key (private) and PREFIX.pub (public)")
    p.add_argument("--force", action="store_true", help="overwrite existing key files")
    p.set_defaults(func=_keygen)
