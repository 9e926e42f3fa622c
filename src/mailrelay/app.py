"""The one place that builds everything from Settings and wires it together.

Security: the demo account's password is printed once to the terminal that started the server
and never logged; TLS keys are read here and handed to the listeners.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import ssl
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from argon2 import PasswordHasher
from sqlalchemy.engine import Engine

from mailrelay.accounts.domains import DomainService
from mailrelay.accounts.lockout import SharedLockout
from mailrelay.accounts.operators import OperatorKeys, key_path
from mailrelay.accounts.passwords import generate_password, make_hasher
from mailrelay.accounts.service import AccountService
from mailrelay.accounts.websessions import WebSessions
from mailrelay.delivery.agent import DeliveryAgent
from mailrelay.delivery.signing import DomainSigner
from mailrelay.events.webhook import WebhookDispatcher
from mailrelay.http.app import build_api
from mailrelay.http.server import HTTPServer
from mailrelay.http.services import Services
from mailrelay.inbound.directory import InboundDirectory
from mailrelay.inbound.dispatch import InboundDispatcher
from mailrelay.inbound.receive import InboundReceiver
from mailrelay.mailauth.spf import SPFChecker
from mailrelay.resolver.dnspython import BlockingDNSResolver, DNSConfigError, DNSResolver
from mailrelay.router import PolicyRouter
from mailrelay.settings import ConfigError, Settings, parse_listen
from mailrelay.smtp.listener import EngineLimits, Listener
from mailrelay.smtp.server import BindFailure, ListenerState, SMTPServer
from mailrelay.smtp.tls import TLSConfigError, ensure_self_signed, server_context
from mailrelay.spool.retention import RetentionSweeper
from mailrelay.spool.writer import SpoolWriter
from mailrelay.store.open import open_storage
from mailrelay.store.space import for_url as disk_space_for
from mailrelay.submission.api import APISubmission
from mailrelay.submission.policy import SubmissionPolicy
from mailrelay.web import pages as web
from mailrelay.web.services import WebServices

log = logging.getLogger("mailrelay")

DEMO_ACCOUNT = "demo"


@dataclass(frozen=True, slots=True)
class DemoCredentials:
    username: str
    password: str


def tls_context(settings: Settings) -> ssl.SSLContext:
    """The server certificate: configured files, or a self-signed one made on first start."""
    if not settings.tls.cert_file and ensure_self_signed(settings.cert_path, settings.key_path,
                                                          settings.server.hostname):
        log.info("wrote a self-signed certificate for %s to %s", settings.server.hostname,
                     settings.cert_path)
    try:
        return server_context(settings.cert_path, settings.key_path, min_version=settings.tls.min_version)
    except TLSConfigError as exc:
        raise ConfigError(settings.source, exc.key, str(exc)) from None


def raise_file_limit() -> int:
    """Lift the soft open-files limit to the hard one: each connection is a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class App:
    """A running mailrelay node: storage, accounts, the spool writer and the SMTP listeners."""

    def __init__(self, settings: Settings, *, hasher: PasswordHasher | None = None,
                 engine: Engine | None = None, deliver: bool | None = None, node: str | None = None,
                 serve_smtp: bool = True, inline_writer: bool | None = None) -> None:
        """`deliver`: run delivery workers in this process (default: `delivery.enabled` and
        `delivery.processes == 0`); `node`: the lease owner name of those workers;
        `inline_writer`: see SpoolWriter (default: a process that serves no SMTP)."""
        self.settings = settings
        self.ssl_context = tls_context(settings)  # before storage: a bad file should fail fast
        self.engine = engine if engine is not None else open_storage(settings)
        self.hasher = hasher or make_hasher()
        self.accounts = AccountService(self.engine, self.hasher)
        self.writer = SpoolWriter(self.engine, max_batch=settings.storage.group_commit_max,
                                  inline=not serve_smtp if inline_writer is None else inline_writer)
        self.domains = DomainService(self.engine)
        # Short cache: a domain just added with `mailrelay domain add` works within seconds.
        self.signer = DomainSigner(self.domains, cache_seconds=5.0)
        self.auth_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="auth")
        # Failed SMTP logins and API keys per client address, counted with every other process.
        self.lockout = SharedLockout(run=self.writer.run, slowdown_after=settings.auth.slowdown_after,
                                     lockout_after=settings.auth.lockout_after,
                                     lockout_seconds=settings.auth.lockout_seconds,
                                     window=settings.auth.failure_window)
        self._serves_logins = serve_smtp  # and once build_http() is called
        self.smtp = self._build_smtp()
        if deliver is None:
            deliver = settings.delivery.enabled and settings.delivery.processes == 0
        self.serve_smtp = serve_smtp
        self.agent: DeliveryAgent | None = self._build_agent(node) if deliver else None
        # The event webhook is posted from the processes that deliver (one dispatcher each).
        self.webhooks = WebhookDispatcher(settings.webhooks, self.writer) if deliver else None
        # Received mail goes to its domain's parse webhook from the same processes.
        self.inbound = (InboundDispatcher(settings.inbound, self.writer, node=self.agent.node,
                                          allow_private=settings.webhooks.allow_private_targets)
                        if self.agent is not None else None)
        # Retention: one sweeper per node, in the process that serves SMTP (spool.retention).
        self.retention = (RetentionSweeper(settings.retention, self.engine, self.writer)
                          if serve_smtp and settings.retention.enabled else None)

    def _build_agent(self, node: str | None) -> DeliveryAgent:
        s = self.settings
        try:
            resolver = DNSResolver(s.dns.nameservers, s.dns.timeout)
        except DNSConfigError as exc:
            raise ConfigError(s.source, exc.key, str(exc)) from None
        except ValueError as exc:
            raise ConfigError(s.source, "dns.nameservers", str(exc)) from None
        agent = DeliveryAgent(settings=s.delivery, writer=self.writer, resolver=resolver,
                              hostname=s.server.hostname, signer=self.signer, node=node)
        self.writer.on_enqueued = agent.wake
        return agent

    def _build_smtp(self) -> SMTPServer:
        s = self.settings
        self.receiver = self._build_inbound()
        self.submission = submission = SubmissionPolicy(hostname=s.server.hostname, accounts=self.accounts,
                                      writer=self.writer, trusted_account=s.submission.trusted_account,
                                      executor=self.auth_executor,
                                      sender_domains=self.signer if s.submission.require_own_domain else None,
                                      plans=s.plans, default_plan=s.accounts.default_plan)
        # Every listener both sends and receives: the router picks the policy per session.
        self.space = disk_space_for(s.storage_url, min_free=s.storage.min_free)
        policy = PolicyRouter(submission, inbound=self.receiver, space=self.space)
        listeners = [
            Listener(
                name=ls.name,
                addresses=tuple(parse_listen(a) for a in ls.listen),
                handler=policy,
                tls=ls.tls,
                ssl_context=self.ssl_context if ls.tls != "none" else None,
                require_auth=ls.require_auth,
                require_tls=ls.require_tls,
                allow_plaintext_auth=(s.auth.allow_plaintext if ls.allow_plaintext_auth is None
                                      else ls.allow_plaintext_auth),
                trusted_networks=(s.submission.trusted_networks if ls.trusted_networks is None
                                  else ls.trusted_networks),
            )
            for ls in s.listeners
            if ls.enabled
        ]
        limits = EngineLimits(
            max_message_size=s.smtp.max_message_size, max_recipients=s.smtp.max_recipients,
            idle_timeout=s.smtp.idle_timeout, command_deadline=s.smtp.command_deadline,
            data_deadline=s.smtp.data_deadline, min_data_rate=s.smtp.min_data_rate,
            max_connections=s.smtp.max_connections,
            max_connections_per_ip=s.smtp.max_connections_per_ip, bare_newline=s.smtp.bare_newline,
        )
        return SMTPServer(hostname=s.server.hostname, banner=s.smtp.banner, limits=limits,
                          auth_limiter=self.lockout, listeners=listeners)

    def build_http(self, listeners: ListenerState | None = None) -> HTTPServer:
        """The HTTP API over this node's services (served by the `serve` process's HTTP child).

        `listeners`: what the node's SMTP listeners bound, as the `serve` process told its HTTP
        child (for /readyz); by default this process's own listeners."""
        s = self.settings
        self._serves_logins = True
        # Below storage.min_free the API refuses mail too: the rest is for what is queued already.
        submission = APISubmission(self.submission, space=self.space)
        services = Services(settings=s, accounts=self.accounts, submission=submission,
                            auth_limiter=self.lockout, executor=self.auth_executor,
                            engine=self.engine, operator_keys=OperatorKeys(key_path(s.data_dir), self.hasher),
                            listeners=self.smtp.state if listeners is None else lambda: listeners,
                            health=self.writer.health)
        api = build_api(services)
        web.install(api, WebServices(settings=s, accounts=self.accounts, sessions=WebSessions(self.engine),
                                     lockout=self.lockout, engine=self.engine, executor=self.auth_executor,
                                     secure_cookies=s.http.tls))
        return HTTPServer(api, s, self.ssl_context if s.http.tls else None)

    def _build_inbound(self) -> InboundReceiver | None:
        """Receiving for our inbound domains on every listener (unauthenticated clients)."""
        s = self.settings
        try:
            resolver = DNSResolver(s.dns.nameservers, s.dns.timeout)
            spf = SPFChecker(BlockingDNSResolver(s.dns.nameservers, s.dns.timeout))
        except DNSConfigError as exc:
            if not s.dns.nameservers and exc.key == "dns.nameservers":
                # No usable system resolver: submission still works; receiving needs DNS.
                logging.getLogger("mailrelay.inbound").warning("receiving mail is off: %s", exc)
                return None
            raise ConfigError(s.source, exc.key, str(exc)) from None
        except ValueError as exc:
            raise ConfigError(s.source, "dns.nameservers", str(exc)) from None
        # Short cache: an address just added with `mailrelay address add` works within seconds.
        return InboundReceiver(hostname=s.server.hostname, directory=InboundDirectory(
                                   self.engine, recipient_delimiter=s.inbound.recipient_delimiter),
                               resolver=resolver, spf=spf, writer=self.writer,
                               executor=self.auth_executor, dns_timeout=s.dns.timeout)

    def ensure_demo_account(self) -> DemoCredentials | None:
        """First start on an empty database: make the demo account (password shown once)."""
        if not self.settings.server.demo_account or self.accounts.count() > 0:
            return None
        password = generate_password()
        self.accounts.create(DEMO_ACCOUNT, password)
        return DemoCredentials(DEMO_ACCOUNT, password)

    async def start(self) -> list[BindFailure]:
        self.writer.start(asyncio.get_running_loop())
        if self._serves_logins:
            self.lockout.start()
        if self.agent is not None:
            await self.agent.start()
        if self.webhooks is not None:
            await self.webhooks.start()
        if self.inbound is not None:
            await self.inbound.start()
        if self.retention is not None:
            self.retention.start()
        return await self.smtp.start() if self.serve_smtp else []

    async def stop(self) -> None:
        await self.smtp.stop(self.settings.server.shutdown_timeout)
        await self.lockout.stop()
        if self.retention is not None:
            await self.retention.stop()
        if self.agent is not None:
            await self.agent.stop(self.settings.server.shutdown_timeout)
        if self.webhooks is not None:
            await self.webhooks.stop(self.settings.server.shutdown_timeout)
        if self.inbound is not None:
            await self.inbound.stop(self.settings.server.shutdown_timeout)
        if self.agent is not None:  # last: until now the dispatchers leased under its name
            await self.agent.leave(self.settings.server.shutdown_timeout)
        await asyncio.get_running_loop().run_in_executor(None, self.writer.stop)
        if self.receiver is not None:
            self.receiver.close()  # the SPF checker's threads
        self.auth_executor.shutdown(wait=False, cancel_futures=True)
        self.accounts.close()
        self.engine.dispose()
