"""`mailrelay domain ...`: add sender domains with DKIM keys, list, show, verify DNS, remove;
`domain add --inbound` / `domain inbound` make a domain receive mail on port 25; `domain rotate`
replaces a domain's DKIM key in two steps (a next key to publish, then the switch once DNS has it).

A domain is added unverified and sends (require_own_domain, DKIM signing) only once `domain
verify` found all its records, or an operator used `domain verify --force` (closed networks).

Security: `--private-key` reads a private key from a file (never from argv); keys are stored
in the database and never printed, only their public DNS records.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from mailrelay.accounts.dnsrecords import (
    DNSRecord,
    RecordCheck,
    check_bounded,
    check_records,
    dns_records,
    next_key_records,
)
from mailrelay.accounts.domains import (
    ALGORITHM_CHOICES,
    DEFAULT_SELECTOR,
    DMARC_POLICIES,
    Domain,
    DomainService,
)
from mailrelay.cli.common import UsageError, open_from_args
from mailrelay.cli.output import format_table, format_time, to_json
from mailrelay.settings import ConfigError, Settings

MAX_KEY_FILE = 64 * 1024  # a PEM key is a few KB; refuse to read a mistaken huge file

TXT_NOTE = ("TXT values longer than 255 characters are split into several strings in the zone; "
            "most DNS providers do this for you.")


def add_arguments(domain: argparse.ArgumentParser) -> None:
    """The arguments of `mailrelay domain` (its parser made by cli/main.py)."""
    dom = domain.add_subparsers(dest="domain_command", metavar="COMMAND", required=True)

    p = dom.add_parser("add", help="add a sender domain to an account, with DKIM keys")
    p.add_argument("domain")
    p.add_argument("--account", required=True, metavar="NAME")
    p.add_argument("--selector", default=DEFAULT_SELECTOR,
                   help=f"DKIM selector (default {DEFAULT_SELECTOR}; with both algorithms the "
                        "Ed25519 key uses SELECTOR-ed)")
    p.add_argument("--algorithm", choices=ALGORITHM_CHOICES, default=None,
                   help="keys to generate (default rsa); with --private-key, the key's type decides")
    p.add_argument("--private-key", metavar="FILE",
                   help="import this PEM private key (RSA >= 1024 bits or Ed25519) instead of "
                        "generating one")
    p.add_argument("--inbound", action="store_true",
                   help="also receive mail for this domain on port 25 (publish an MX to us)")
    p.add_argument("--webhook", metavar="URL",
                   help="with --inbound: POST received mail here (Inbound Parse); without, it is "
                        "kept in the inbox")
    p.add_argument("--catch-all", action="store_true",
                   help="with --inbound: accept any address at the domain, not only known ones")
    p.add_argument("--raw", action="store_true",
                   help="with --webhook: post the whole message in one field (SendGrid's raw mode)")
    p.add_argument("--dmarc", choices=DMARC_POLICIES, default=None,
                   help="with --inbound: monitor (default: only record) or enforce the sender's "
                        "DMARC policy (p=reject refused, p=quarantine marked)")
    _json(p)
    p.set_defaults(func=cmd_add)

    p = dom.add_parser("inbound", help="receive mail for a domain (or stop), and how")
    p.add_argument("domain")
    p.add_argument("--off", action="store_true", help="stop receiving mail for the domain")
    hook = p.add_mutually_exclusive_group()
    hook.add_argument("--webhook", metavar="URL", help="POST received mail here (Inbound Parse)")
    hook.add_argument("--no-webhook", action="store_true", help="keep received mail in the inbox")
    catch = p.add_mutually_exclusive_group()
    catch.add_argument("--catch-all", dest="catch_all", action="store_const", const=True, default=None,
                       help="accept any address at the domain")
    catch.add_argument("--no-catch-all", dest="catch_all", action="store_const", const=False,
                       help="accept only known addresses (`mailrelay address add`)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--raw", dest="raw", action="store_const", const=True, default=None,
                      help="post the whole message in one field")
    mode.add_argument("--parsed", dest="raw", action="store_const", const=False,
                      help="post parsed fields: text, html, attachments (default)")
    p.add_argument("--dmarc", choices=DMARC_POLICIES, default=None,
                   help="monitor (only record) or enforce the sender's DMARC policy")
    _json(p)
    p.set_defaults(func=cmd_inbound)

    p = dom.add_parser("list", help="list sender domains")
    p.add_argument("--account", metavar="NAME")
    _json(p)
    p.set_defaults(func=cmd_list)

    p = dom.add_parser("show", help="show a domain and the DNS records to publish")
    p.add_argument("domain")
    _json(p)
    p.set_defaults(func=cmd_show)

    p = dom.add_parser("verify", help="check the domain's DNS records and, when all are in place, mark it "
                                      "verified (usable for sending); exit 1 unless all are ok")
    p.add_argument("domain")
    p.add_argument("--force", action="store_true",
                   help="mark the domain verified WITHOUT checking DNS (operators, closed networks)")
    _json(p)
    p.set_defaults(func=cmd_verify)

    p = dom.add_parser("rotate", help="replace the domain's DKIM key: start (a next key to publish), then "
                                      "--finish once DNS has it (or --cancel)")
    p.add_argument("domain")
    p.add_argument("--selector", help="start: the next key's selector (default mrYYYYMM, made unique)")
    step = p.add_mutually_exclusive_group()
    step.add_argument("--finish", action="store_true",
                      help="check DNS for the next key's record and, when it is there, sign with the next key")
    step.add_argument("--cancel", action="store_true", help="drop the next key; the current one stays")
    p.add_argument("--force", action="store_true",
                   help="with --finish: switch WITHOUT checking DNS (operators, closed networks)")
    _json(p)
    p.set_defaults(func=cmd_rotate)

    p = dom.add_parser("remove", help="remove a domain and delete its DKIM keys")
    p.add_argument("domain")
    p.set_defaults(func=cmd_remove)


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _service(args: argparse.Namespace) -> tuple[Settings, DomainService]:
    settings, engine = open_from_args(args)
    return settings, DomainService(engine)


def _records(settings: Settings, domain: Domain) -> list[DNSRecord]:
    return dns_records(domain, hostname=settings.server.hostname,
                       source_address=settings.delivery.source_address)


def read_key_file(path: str) -> tuple[str, bytes]:
    """(kind, PEM) of the key in `path`, checked; errors name the file."""
    from mailrelay.mailauth.dkimsign import DKIMKeyError, normalize_private_key

    try:
        with open(path, "rb") as fh:
            pem = fh.read(MAX_KEY_FILE + 1)
    except FileNotFoundError:
        raise UsageError(f"--private-key {path}: file not found") from None
    except PermissionError:
        raise UsageError(f"--private-key {path}: file not readable (permission denied)") from None
    except IsADirectoryError:
        raise UsageError(f"--private-key {path}: is a directory, expected a PEM file") from None
    except OSError as exc:
        raise UsageError(f"--private-key {path}: cannot read ({exc.strerror})") from None
    if len(pem) > MAX_KEY_FILE:
        raise UsageError(f"--private-key {path}: larger than {MAX_KEY_FILE // 1024} KB, "
                         "not a PEM private key")
    try:
        kind, _ = normalize_private_key(pem)
    except DKIMKeyError as exc:
        raise UsageError(f"--private-key {path}: {exc}") from None
    return kind, pem


def cmd_add(args: argparse.Namespace) -> int:
    pem = None
    if args.private_key is not None:
        kind, pem = read_key_file(args.private_key)
        if args.algorithm not in (None, kind):
            raise UsageError(f"--private-key {args.private_key} is an {kind} key, but --algorithm "
                             f"is {args.algorithm}: drop --algorithm (the key's type decides)")
    if not args.inbound:
        given = [f for f, v in (("--webhook", args.webhook is not None), ("--catch-all", args.catch_all),
                                ("--raw", args.raw), ("--dmarc", args.dmarc is not None)) if v]
        if given:
            raise UsageError(f"{given[0]} needs --inbound (the domain must receive mail)")
    if args.raw and args.webhook is None:
        raise UsageError("--raw needs --webhook (it is how received mail is posted)")
    settings, svc = _service(args)
    domain = svc.add(args.domain, args.account, selector=args.selector,
                     algorithm=args.algorithm or "rsa", private_key_pem=pem,
                     inbound=args.inbound, catch_all=args.catch_all, webhook=args.webhook,
                     raw=args.raw, dmarc_policy=args.dmarc or "monitor")
    records = _records(settings, domain)
    if args.json:
        print(to_json(_domain_json(domain, records)))
        return 0
    how = "imported" if pem is not None else "new"
    print(f"added domain {domain.name} to account {domain.account_name} "
          f"({how} DKIM key: {', '.join(_describe_keys(domain))})")
    if domain.inbound:
        print(f"receiving mail: {_describe_inbound(domain)}")
    print()
    print("Publish these DNS records:")
    print(_records_table(records))
    print()
    print(TXT_NOTE)
    print(f"Then run `mailrelay domain verify {domain.name}` to check them: the domain is unverified "
          "and cannot be used for sending until they are in place.")
    return 0


def _describe_inbound(d: Domain) -> str:
    if not d.inbound:
        return "off"
    who = "any address (catch-all)" if d.catch_all else "known addresses (`mailrelay address add`)"
    where = (f"posted to {d.inbound_webhook}" + (" (raw)" if d.inbound_raw else "")
             if d.inbound_webhook else "kept in the inbox")
    return f"for {who}, {where}, DMARC {d.dmarc_policy}"


def cmd_inbound(args: argparse.Namespace) -> int:
    if args.off:
        given = [f for f, v in (("--webhook", args.webhook), ("--no-webhook", args.no_webhook or None),
                                ("--catch-all/--no-catch-all", args.catch_all),
                                ("--raw/--parsed", args.raw), ("--dmarc", args.dmarc)) if v is not None]
        if given:
            raise UsageError(f"--off takes no {given[0]}: it only stops receiving (the settings are kept)")
    _, svc = _service(args)
    domain = svc.set_inbound(args.domain, inbound=not args.off, catch_all=args.catch_all,
                             webhook=args.webhook, clear_webhook=args.no_webhook, raw=args.raw,
                             dmarc_policy=args.dmarc)
    if args.json:
        print(to_json(_domain_json(domain)))
    elif args.off:
        print(f"domain {domain.name} no longer receives mail (port 25 refuses it as relaying)")
    else:
        print(f"domain {domain.name} receives mail {_describe_inbound(domain)}")
        if domain.inbound_raw and not domain.inbound_webhook:
            print("note: --raw applies once a webhook is set (`--webhook URL`)")
    return 0


def _describe_keys(domain: Domain) -> list[str]:
    return [f"{k.kind} selector {k.selector}" for k in domain.dkim]


def _records_table(records: list[DNSRecord]) -> str:
    return format_table(("type", "name", "value"),
                        [(r.type, r.name + (" (next key: publish now)" if r.next_key else ""), r.value)
                         for r in records])


def _describe_rotation(d: Domain) -> str:
    if d.rotating:
        return (f"next key under selector {', '.join(k.selector for k in d.next_dkim)} since "
                f"{format_time(d.rotation_started_at or 0)}: publish its record, then "
                f"`mailrelay domain rotate {d.name} --finish`")
    if d.previous_selectors:
        return (f"none; selector {', '.join(d.previous_selectors)} retired {format_time(d.retired_at or 0)} "
                "(remove its TXT record a few days after: mail in transit is still checked against it)")
    return "none"


def _record_json(r: DNSRecord) -> dict[str, Any]:
    return {"purpose": r.purpose, "type": r.type, "name": r.name, "value": r.value}


def _domain_json(d: Domain, records: list[DNSRecord] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": d.name, "account": d.account_name, "selector": d.selector,
        "algorithms": list(d.algorithms), "created_at": d.created_at,
        "verified": d.verified, "verified_at": d.verified_at,
        "dkim": [{"algorithm": k.kind, "selector": k.selector, "record": k.record} for k in d.dkim],
        "inbound": {"enabled": d.inbound, "catch_all": d.catch_all, "webhook": d.inbound_webhook,
                    "raw": d.inbound_raw, "dmarc": d.dmarc_policy},
        "rotation": {"next_selector": d.next_selector, "started_at": d.rotation_started_at,
                     "next_dkim": [{"algorithm": k.kind, "selector": k.selector, "record": k.record}
                                   for k in d.next_dkim],
                     "previous_selectors": list(d.previous_selectors), "retired_at": d.retired_at},
    }
    if records is not None:
        out["dns_records"] = [_record_json(r) for r in records]
    return out


def cmd_list(args: argparse.Namespace) -> int:
    _, svc = _service(args)
    found = svc.list(args.account)
    if args.json:
        print(to_json([_domain_json(d) for d in found]))
    elif not found:
        print("no domains; add one with `mailrelay domain add DOMAIN --account NAME`")
    else:
        rows = [(d.name, d.account_name, "yes" if d.verified else "no", ", ".join(_describe_keys(d)),
                 format_time(d.created_at)) for d in found]
        print(format_table(("domain", "account", "verified", "dkim", "created"), rows))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    settings, svc = _service(args)
    domain = svc.require(args.domain)
    records = _records(settings, domain)
    if args.json:
        print(to_json(_domain_json(domain, records)))
        return 0
    print(f"domain:   {domain.name}")
    print(f"account:  {domain.account_name}")
    print(f"dkim:     {', '.join(_describe_keys(domain))}")
    print(f"created:  {format_time(domain.created_at)}")
    print(f"verified: {_describe_verified(domain)}")
    print(f"inbound:  {_describe_inbound(domain)}")
    print(f"rotation: {_describe_rotation(domain)}")
    print()
    print("DNS records:")
    print(_records_table(records))
    return 0


def _check_json(c: RecordCheck) -> dict[str, Any]:
    return {**_record_json(c.record), "status": c.status, "found": list(c.found), "note": c.note}


def _describe_verified(d: Domain) -> str:
    if d.verified_at is None:
        return f"no (not used for sending until `mailrelay domain verify {d.name}` finds its records)"
    return f"yes, since {format_time(d.verified_at)}"


def _force_verify(svc: DomainService, name: str, as_json: bool) -> int:
    domain = svc.mark_verified(name)
    if as_json:
        print(to_json({"domain": domain.name, "ok": None, "forced": True, "verified": True,
                       "verified_at": domain.verified_at, "checks": []}))
    else:
        print(f"domain {domain.name} is marked verified WITHOUT checking its DNS records (--force): it is "
              "used for sending now; receivers outside this network will fail its DKIM and SPF checks "
              "unless the records are published")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    settings, svc = _service(args)
    if args.force:
        return _force_verify(svc, args.domain, args.json)
    domain = svc.require(args.domain)
    records = _records(settings, domain)
    # Imported here: dnspython is only needed by this command.
    from mailrelay.resolver.dnspython import DNSConfigError, DNSResolver

    try:
        resolver = DNSResolver(settings.dns.nameservers, settings.dns.timeout)
    except DNSConfigError as exc:
        raise ConfigError(settings.source, exc.key, str(exc)) from None
    checks = asyncio.run(check_records(domain, records, resolver))
    ok = all(c.status == "ok" for c in checks)
    was_verified = domain.verified
    if ok:
        domain = svc.mark_verified(domain.name)
    if args.json:
        print(to_json({"domain": domain.name, "ok": ok, "forced": False, "verified": domain.verified,
                       "verified_at": domain.verified_at, "checks": [_check_json(c) for c in checks]}))
        return 0 if ok else 1
    rows = [(c.record.purpose.upper(), c.record.type, c.record.name, c.status) for c in checks]
    print(format_table(("record", "type", "name", "status"), rows))
    for c in checks:
        if c.status == "ok":
            continue
        print()
        print(f"{c.record.purpose.upper()} {c.record.type} {c.record.name}: {c.status}"
              + (f" ({c.note})" if c.note else ""))
        print(f"  expected: {c.record.value}")
        for value in c.found:
            print(f"  found:    {value}")
    print()
    if ok:
        print(f"domain {domain.name} is verified" + (" (it was already)" if was_verified else "")
              + ": it is used for sending (From: accepted, DKIM-signed)")
        print(f"all DNS records of {domain.name} are in place")
    else:
        missing = ", ".join(f"{c.record.purpose.upper()} {c.record.type} {c.record.name}"
                            for c in checks if c.status != "ok")
        print(f"{sum(c.status != 'ok' for c in checks)} of {len(checks)} records are not in place "
              f"yet ({missing}); DNS changes can take a while to appear")
        if was_verified:
            print(f"domain {domain.name} stays verified (since {format_time(domain.verified_at or 0)}): "
                  "a failed check does not take that back")
        else:
            print(f"domain {domain.name} stays unverified: it is not used for sending (From: refused under "
                  "require_own_domain, never DKIM-signed) until every record is in place")
    return 0 if ok else 1


def cmd_rotate(args: argparse.Namespace) -> int:
    if args.force and not args.finish:
        raise UsageError("--force goes with --finish (it switches keys without checking DNS)")
    if args.selector is not None and (args.finish or args.cancel):
        raise UsageError("--selector is for starting a rotation, not with --finish or --cancel")
    settings, svc = _service(args)
    if args.cancel:
        domain = svc.cancel_rotation(args.domain)
        if args.json:
            print(to_json(_domain_json(domain)))
        else:
            print(f"rotation of {domain.name} cancelled: the next key is deleted, mail is still signed with "
                  f"selector {domain.selector} (remove the next key's TXT record if you published it)")
        return 0
    if args.finish:
        return _finish_rotation(settings, svc, args)
    domain = svc.start_rotation(args.domain, args.selector)
    records = next_key_records(domain)
    if args.json:
        print(to_json(_domain_json(domain, _records(settings, domain))))
        return 0
    print(f"rotation of {domain.name} started: new {'/'.join(domain.algorithms)} key under selector "
          f"{domain.next_selector}; mail is still signed with selector {domain.selector}")
    print()
    print("Publish this DNS record now (the next key):")
    print(_records_table([DNSRecord(r.purpose, r.type, r.name, r.value) for r in records]))
    print()
    print(TXT_NOTE)
    print(f"Then run `mailrelay domain rotate {domain.name} --finish`: it checks the record and switches "
          "signing to the next key.")
    return 0


def _finish_rotation(settings: Settings, svc: DomainService, args: argparse.Namespace) -> int:
    domain = svc.require(args.domain)
    if not domain.rotating or domain.next_selector is None:
        raise UsageError(f"domain {domain.name} is not rotating its DKIM key: start with "
                         f"`mailrelay domain rotate {domain.name}`")
    checks: list[RecordCheck] = []
    if not args.force:
        from mailrelay.resolver.dnspython import DNSConfigError, DNSResolver

        try:
            resolver = DNSResolver(settings.dns.nameservers, settings.dns.timeout)
        except DNSConfigError as exc:
            raise ConfigError(settings.source, exc.key, str(exc)) from None
        checks = asyncio.run(check_bounded(domain, next_key_records(domain), resolver,
                                           bound=settings.dns.timeout + 1.0))
    ok = all(c.status == "ok" for c in checks)
    old = domain.selector
    if ok:
        domain = svc.finish_rotation(domain.name, domain.next_selector)
    if args.json:
        print(to_json({"domain": domain.name, "ok": ok, "forced": bool(args.force), "selector": domain.selector,
                       "checks": [_check_json(c) for c in checks], **_domain_json(domain)}))
        return 0 if ok else 1
    for c in checks:
        if c.status != "ok":
            print(f"DKIM TXT {c.record.name}: {c.status}" + (f" ({c.note})" if c.note else ""))
            print(f"  expected: {c.record.value}")
            for value in c.found:
                print(f"  found:    {value}")
    if not ok:
        print(f"the next key's record is not in place yet: mail is still signed with selector {old}; "
              f"publish it, wait for DNS, then run `mailrelay domain rotate {domain.name} --finish` again")
        return 1
    how = " WITHOUT checking DNS (--force)" if args.force else " (its record is in place)"
    print(f"domain {domain.name} now signs with selector {domain.selector}{how}")
    print(f"keep the TXT record of selector {', '.join(domain.previous_selectors)} a few days (mail in transit "
          "is still checked against it), then remove it")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _, svc = _service(args)
    domain = svc.remove(args.domain)
    print(f"removed domain {domain.name} from account {domain.account_name}; its DKIM keys are "
          "deleted, so remove its _domainkey DNS records too")
    return 0

