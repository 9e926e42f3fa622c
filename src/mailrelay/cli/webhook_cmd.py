"""`mailrelay account webhook NAME [URL | --off] [--show-secret] [--rotate-secret]`: an
account's event webhook (docs/webhooks.md).

Security: the signing secret is printed only with --show-secret (or --rotate-secret), never
when the URL is shown or set.
"""

from __future__ import annotations

import argparse
from typing import Any

from mailrelay.cli.common import UsageError, open_from_args
from mailrelay.cli.output import printable, to_json
from mailrelay.events.hooks import Webhook, WebhookService


def add_account_arguments(acc: Any) -> None:
    """Add this module's subcommands to `mailrelay account`."""
    p = acc.add_parser("webhook", help="show or set the account's event webhook URL",
                       description="Events (processed, delivered, deferred, bounce, dropped...) are POSTed "
                                   "to URL as signed JSON; see docs/webhooks.md.")
    p.add_argument("name")
    p.add_argument("url", nargs="?", metavar="URL", help="post events here (http:// or https://)")
    p.add_argument("--off", action="store_true", help="stop posting events (pending ones are not sent)")
    p.add_argument("--show-secret", action="store_true", help="print the signing secret")
    p.add_argument("--rotate-secret", action="store_true", help="make a new signing secret and print it")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_webhook)


def _json(hook: Webhook, *, secret: bool, **extra: Any) -> str:
    out: dict[str, Any] = {"account": hook.account, "url": hook.url, "enabled": hook.enabled and hook.url is not None,
                           "secret_set": hook.secret is not None}
    if secret:
        out["secret"] = hook.secret
    return to_json({**out, **extra})


def cmd_webhook(args: argparse.Namespace) -> int:
    if args.off and (args.url or args.rotate_secret):
        raise UsageError("--off cannot be combined with a URL or --rotate-secret")
    _, engine = open_from_args(args)
    svc = WebhookService(engine)
    if args.off:
        dropped = svc.turn_off(args.name)
        hook = svc.get(args.name)
        if args.json:
            print(_json(hook, secret=args.show_secret, dropped=dropped))
        else:
            print(f"account {args.name}: event webhook off"
                  + (f"; {dropped} pending events will not be posted" if dropped else ""))
        return 0
    hook = svc.set_url(args.name, args.url) if args.url else svc.get(args.name)
    if args.rotate_secret:
        if hook.url is None and not args.url:
            raise UsageError(f"account {args.name} has no event webhook; set one with "
                             f"`mailrelay account webhook {args.name} URL`")
        hook = svc.rotate_secret(args.name)
    show = args.show_secret or args.rotate_secret
    if args.json:
        print(_json(hook, secret=show))
        return 0
    if hook.url is None:
        print(f"account {args.name}: no event webhook; set one with `mailrelay account webhook {args.name} URL`")
    elif args.url:
        print(f"account {args.name}: events are posted to {printable(hook.url)} from now on")
    elif not hook.enabled:
        print(f"account {args.name}: event webhook {printable(hook.url)} is switched off (through the API); "
              f"`mailrelay account webhook {args.name} URL` switches it on")
    else:
        print(f"account {args.name}: events are posted to {printable(hook.url)}")
    if show and hook.secret:
        print(f"signing secret: {hook.secret}")
    elif hook.url is not None:
        print(f"signing secret: set; see it with `mailrelay account webhook {args.name} --show-secret`")
    return 0
