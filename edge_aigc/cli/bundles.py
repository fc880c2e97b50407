"""``edge-aigc keygen | inspect | verify``: signing keys and bundle files."""
from __future__ import annotations

import argparse
import json

from ..contract import Task
from ..bundle import signing
from ..bundle.load import inspect_bundle, load_bundle
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
            ("source", f"{m.source.get('kind', '?')}: {m.source.get('ref', '?')}" if m.source else "-"),
            ("created", f"{m.created or '-'} by edge-aigc {m.converter_version or '?'}"),
            ("schema", m.schema)]
    cfg = dict(m.task_config)
    if m.task == Task.TEXT:
        rows += _lm_rows(cfg)
    _print_rows(rows)
    for title, section in (("task config", cfg), ("fidelity", m.fidelity)):
        if section:
            print(f"\n{title}:")
            print("\n".join(f"  {k}: {json.dumps(v)}" for k, v in sorted(section.items())))
    if m.io:
        print("\nio:")
        for side in ("inputs", "outputs"):
            print("\n".join(_io_lines(side, m.io.get(side, {}), m.task_config)))
    print("\n" + table(("FILE", "SHA256"), [(n, d[:16] + "…") for n, d in sorted(m.files.items())]))
    print("\n(edge-aigc inspect --json prints the whole manifest)")
    return 0


def _print_rows(rows: list[tuple[str, object]]) -> None:
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k.ljust(width)}  {v}" for k, v in rows))


# task_config keys the LM summary shows; the rest is printed as the task config.
_LM_KEYS = ("architecture", "num_layers", "num_kv_heads", "head_dim", "max_context", "kv_layout",
            "kv_inputs", "kv_outputs", "tokenizer", "vocab_size", "chat_template")


def _lm_rows(cfg: dict) -> list[tuple[str, object]]:
    """The language model at a glance; pops the keys it shows from ``cfg``."""
    got = {k: cfg.pop(k) for k in _LM_KEYS if k in cfg}
    layout = got.get("kv_layout", "concat")
    layout_text = {"shared": "one buffer per layer, written in place (GroupQueryAttention)",
                   "concat": "passed from each step's outputs to the next step's inputs"}.get(layout, layout)
    cache = f"{layout}: {layout_text}; {got.get('kv_inputs', '?')} -> {got.get('kv_outputs', '?')}"
    return [("model", f"{got.get('architecture', '?')}, {got.get('num_layers', '?')} layers, "
                      f"{got.get('num_kv_heads', '?')} KV heads of {got.get('head_dim', '?')}"),
            ("context", f"{got.get('max_context', '?')} tokens"),
            ("kv cache", cache),
            ("tokenizer", f"{got.get('tokenizer', '?')}, vocabulary {got.get('vocab_size', '?')}"),
            ("chat", "template in the bundle" if got.get("chat_template") else "no chat template")]


def _io_lines(side: str, tensors: dict, cfg: dict) -> list[str]:
    """One line per tensor, with the KV-cache tensors folded into a count."""
    prefixes = tuple(str(cfg[k]).split("{")[0] for k in ("kv_inputs", "kv_outputs") if cfg.get(k))
    kv = [n for n in tensors if prefixes and n.startswith(prefixes)]
    lines = [f"  {side}:"] + [f"    {n}: {t.get('dtype', '?')} {t.get('shape', '?')}"
                              for n, t in sorted(tensors.items()) if n not in kv]
    if kv:
        first = tensors[sorted(kv)[0]]
        lines.append(f"    + {len(kv)} KV-cache tensors like {sorted(kv)[0]}: {first.get('dtype', '?')} "
                     f"{first.get('shape', '?')}")
    return lines


def _verify(args: argparse.Namespace) -> int:
    key = signing.load_public_key(args.pubkey) if args.pubkey else None
    with load_bundle(args.bundle, public_key=key, require_signature=True if args.require_signature else None) as b:
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
