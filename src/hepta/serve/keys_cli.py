"""`hepta keys`: create, list, limit and revoke API keys, and show what each has used.

A new key goes to stdout alone (so `KEY=$(hepta keys add app)` captures it) and the notes
around it go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone

from hepta.errors import HeptaError
from hepta.serve.keys import KeyRecord, KeyStore, UsageTotals

DEFAULT_KEY_FILE = "hepta-keys.db"


def _limit(value: int | None, unit: str) -> str:
    return f"{value} {unit}/min" if value is not None else f"unlimited {unit}/min"


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def cmd_keys_add(args: argparse.Namespace) -> None:
    with KeyStore(args.file, create=True) as store:
        default_rpm, default_tpm = store.default_limits()
        rpm, tpm = _cli_limit("--rpm", args.rpm, default_rpm), _cli_limit("--tpm", args.tpm, default_tpm)
        raw = store.add(args.name, rpm=rpm, tpm=tpm)
    print(f"created key {args.name!r} ({_limit(rpm, 'requests')}, {_limit(tpm, 'tokens')}) in {args.file}:",
          file=sys.stderr)
    print(raw, flush=True)
    print("This key will not be shown again: store it now (the key file keeps only its hash).", file=sys.stderr)


def cmd_keys_list(args: argparse.Namespace) -> None:
    with KeyStore(args.file) as store:
        keys = store.list()
        totals = {t.key_id: t for t in store.usage()}
    if args.json:
        print(json.dumps([_key_json(k, totals[k.id]) for k in keys]))
        return
    if not keys:
        print(f"no keys in {args.file}; add one with `hepta keys add NAME --file {args.file}`")
        return
    rows = [("NAME", "KEY", "CREATED", "RPM", "TPM", "REQUESTS", "TOKENS", "STATUS")]
    for k in keys:
        t = totals[k.id]
        rows.append((k.name, k.display, _when(k.created_at), _or_unlimited(k.rpm), _or_unlimited(k.tpm),
                     str(t.requests), str(t.total_tokens), "revoked" if k.revoked else "active"))
    _print_table(rows)


def cmd_keys_usage(args: argparse.Namespace) -> None:
    if args.detail:
        return _usage_detail(args)
    with KeyStore(args.file) as store:
        totals = store.usage(args.name)
    if args.json:
        print(json.dumps([{"name": t.name, "key": f"{t.prefix}...", "revoked": t.revoked, "requests": t.requests,
                           "prompt_tokens": t.prompt_tokens, "completion_tokens": t.completion_tokens,
                           "total_tokens": t.total_tokens} for t in totals]))
        return
    rows = [("NAME", "KEY", "REQUESTS", "PROMPT", "COMPLETION", "TOTAL")]
    rows += [(t.name + (" (revoked)" if t.revoked else ""), f"{t.prefix}...", str(t.requests), str(t.prompt_tokens),
              str(t.completion_tokens), str(t.total_tokens)) for t in totals]
    _print_table(rows)


def _usage_detail(args: argparse.Namespace) -> None:
    with KeyStore(args.file) as store:
        detail = store.usage_detail(args.name)
    if args.json:
        print(json.dumps([{"name": r.name, "key": f"{r.prefix}...", "day": r.day, "model": r.model,
                           "endpoint": r.endpoint, "requests": r.requests, "prompt_tokens": r.prompt_tokens,
                           "completion_tokens": r.completion_tokens} for r in detail]))
        return
    rows = [("DAY", "NAME", "MODEL", "ENDPOINT", "REQUESTS", "PROMPT", "COMPLETION")]
    rows += [(r.day, r.name, r.model, r.endpoint, str(r.requests), str(r.prompt_tokens), str(r.completion_tokens))
             for r in detail]
    _print_table(rows)


def cmd_keys_revoke(args: argparse.Namespace) -> None:
    with KeyStore(args.file) as store:
        record = store.revoke(args.name)
    print(f"revoked key {record.name!r} ({record.display}); requests with it now get 401")


def cmd_keys_limits(args: argparse.Namespace) -> None:
    with KeyStore(args.file) as store:
        current = store.get(args.name)
        rpm, tpm = _cli_limit("--rpm", args.rpm, current.rpm), _cli_limit("--tpm", args.tpm, current.tpm)
        record = store.set_limits(args.name, rpm=rpm, tpm=tpm)
    print(f"key {record.name!r}: {_limit(record.rpm, 'requests')}, {_limit(record.tpm, 'tokens')}")


def cmd_keys_defaults(args: argparse.Namespace) -> None:
    setting = args.rpm is not None or args.tpm is not None
    with KeyStore(args.file, create=setting) as store:
        rpm, tpm = store.default_limits()
        if setting:
            rpm, tpm = _cli_limit("--rpm", args.rpm, rpm), _cli_limit("--tpm", args.tpm, tpm)
            store.set_default_limits(rpm, tpm)
    print(f"new keys get {_limit(rpm, 'requests')}, {_limit(tpm, 'tokens')} unless `hepta keys add` names others")


def _cli_limit(flag: str, given: int | None, current: int | None) -> int | None:
    """A limit flag: absent keeps `current`, 0 means unlimited."""
    if given is None:
        return current
    if given < 0:
        raise HeptaError(f"{flag} must be a positive whole number, or 0 for no limit (got {given})")
    return None if given == 0 else given


def _or_unlimited(value: int | None) -> str:
    return "unlimited" if value is None else str(value)


def _key_json(k: KeyRecord, t: UsageTotals) -> dict:
    return {"name": k.name, "key": k.display, "created": _when(k.created_at), "revoked": k.revoked,
            "rpm": k.rpm, "tpm": k.tpm, "requests": t.requests, "prompt_tokens": t.prompt_tokens,
            "completion_tokens": t.completion_tokens}


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())


def add_keys_command(subparsers: argparse._SubParsersAction) -> None:
    """Adds `hepta keys <add|list|usage|limits|defaults|revoke>` to the `hepta` parser."""
    keys = subparsers.add_parser("keys", help="API keys for `hepta serve --api-keys FILE`: add, list, usage, limits, defaults, revoke")
    sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    def with_file(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--file", default=DEFAULT_KEY_FILE, help=f"key file (default: ./{DEFAULT_KEY_FILE})")
        return p

    p = with_file(sub.add_parser("add", help="create a key and print it once"))
    p.add_argument("name", help="a name for the key: letters, digits, '.', '_', '@', '-'")
    p.add_argument("--rpm", type=int, help="requests per minute; 0 = unlimited (default: `hepta keys defaults`)")
    p.add_argument("--tpm", type=int,
                   help="tokens per minute, prompt plus completion; 0 = unlimited (default: `hepta keys defaults`)")
    p.set_defaults(func=cmd_keys_add)

    p = with_file(sub.add_parser("defaults", help="show or set the limits new keys get (unlimited at first)"))
    p.add_argument("--rpm", type=int, help="requests per minute; 0 = unlimited (default: unchanged)")
    p.add_argument("--tpm", type=int, help="tokens per minute; 0 = unlimited (default: unchanged)")
    p.set_defaults(func=cmd_keys_defaults)

    p = with_file(sub.add_parser("list", help="names, key prefixes, limits and usage (never the keys)"))
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=cmd_keys_list)

    p = with_file(sub.add_parser("usage", help="requests and tokens used per key"))
    p.add_argument("name", nargs="?", help="only this key name")
    p.add_argument("--detail", action="store_true", help="one row per key, UTC day, model and endpoint")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=cmd_keys_usage)

    p = with_file(sub.add_parser("limits", help="change a key's limits; a running server applies them at once"))
    p.add_argument("name")
    p.add_argument("--rpm", type=int, help="requests per minute; 0 = unlimited (default: unchanged)")
    p.add_argument("--tpm", type=int, help="tokens per minute; 0 = unlimited (default: unchanged)")
    p.set_defaults(func=cmd_keys_limits)

    p = with_file(sub.add_parser("revoke", help="revoke a key at once; its usage history stays"))
    p.add_argument("name")
    p.set_defaults(func=cmd_keys_revoke)
