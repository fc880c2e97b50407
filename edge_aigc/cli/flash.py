"""``edge-aigc flash``: lay out a device root (e.g. a mounted SD card) for a profile."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..remote.flash import FlashPlan, flash
from ..device.profiles import get_profile
from ..serve.config import DEFAULT_BROKER


def _flash(args: argparse.Namespace) -> int:
    profile = get_profile(args.profile)
    plan = FlashPlan(root=Path(args.root), profile=profile, models=[m for m in args.models.split(",") if m],
                     device_id=args.device_id, broker=args.broker,
                     pubkey=Path(args.pubkey) if args.pubkey else None,
                     sign_key=Path(args.sign_key) if args.sign_key else None)
    written = flash(plan)
    if written:
        print(f"wrote under {args.root}:")
        print("\n".join(f"  {p}" for p in written))
    else:
        print(f"{args.root} is already up to date (nothing written)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flash", help="lay out a device root (bundles, config, systemd unit) e.g. on an SD card",
                       description="Checks every bundle's signature and the profile's size and memory "
                                   "budgets, then writes the store, /etc/edge-aigc/device.toml, the "
                                   "systemd unit and its enable link, and a README. Idempotent.")
    p.add_argument("--profile", required=True, help="the device's profile")
    p.add_argument("--models", required=True, help="comma-separated prebuilt names and/or .eaigc paths")
    p.add_argument("--root", required=True, help="the device root, e.g. the mounted rootfs of an SD card")
    p.add_argument("--device-id", default="edge-device", help="the device's id (a topic level)")
    p.add_argument("--broker", default=DEFAULT_BROKER, help="broker URL the device connects to")
    p.add_argument("--pubkey", help="key the bundles are signed with (default: the prebuilt models' key)")
    p.add_argument("--sign-key", help="re-sign the bundles with this private key; the device trusts it")
    p.set_defaults(func=_flash)
