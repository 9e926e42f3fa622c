"""Tables, as SQLAlchemy Core metadata. Migrations in `migrations/versions` must match this."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# Times are stored as UTC epoch seconds (float): portable between SQLite and PostgreSQL and
# cheap to compare in the scheduler's queries.

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("password_hash", sa.String(255), nullable=False),
    sa.Column("plan", sa.String(32), nullable=False, server_default="free"),
    sa.Column("status", sa.String(16), nullable=False, server_default="active"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    # Sandbox: mail is checked, signed and captured, never delivered. `chaos` (JSON) makes a
    # sandbox answer a fraction of RCPTs / DATAs with a chosen failure.
    sa.Column("sandbox", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("chaos", sa.Text, nullable=True),
    # Event webhook: events are POSTed here, signed with HMAC-SHA256 under the secret.
    sa.Column("webhook_url", sa.Text, nullable=True),
    sa.Column("webhook_secret", sa.String(128), nullable=True),
    # SendGrid's event webhook settings: on/off, which events (JSON list; NULL: all), and the
    # ECDSA P-256 key (PEM) its POSTs are signed with when signing is on (NULL: off).
    sa.Column("webhook_enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("webhook_events", sa.Text, nullable=True),
    sa.Column("webhook_signing_key", sa.Text, nullable=True),
    # An operator signs in to the dashboard's operator pages (every account, the queue, the
    # nodes); set only by `mailrelay operator grant`.
    sa.Column("operator", sa.Boolean, nullable=False, server_default=sa.false()),
)

# Emails counted against plan limits: one row per account and period ("D2026-11-27" for a
# UTC day, "M2026-11" for a month). Incremented with a conditional UPDATE, so concurrent
# sessions (and nodes) can never push a count past its limit.
usage = sa.Table(
    "usage",
    metadata,
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("period", sa.String(16), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False, server_default="0"),
)

# The plans' per-minute rate (mailrelay.quota.rate), shared by every process and node: one row
# per account that has sent with a rate, updated in place. `full_at` is when the account's
# bucket is full again (the "theoretical arrival time" of GCRA), in integer nanoseconds since
# the epoch, so that adding one email's interval is exact; a time in the past means full.
send_rates = sa.Table(
    "send_rates",
    metadata,
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("full_at", sa.BigInteger, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # public part of the key, for lookup
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("label", sa.String(128), nullable=False, server_default=""),
    sa.Column("secret_hash", sa.String(255), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("revoked_at", sa.Float, nullable=True),
    sa.Column("last_used_at", sa.Float, nullable=True),
    # JSON list of SendGrid scope names (mailrelay.accounts.scopes); NULL: full access, as
    # every key made before scopes existed has.
    sa.Column("scopes", sa.Text, nullable=True),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),  # queue id
    # indexed by ix_messages_activity, which leads with it
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id"), nullable=False),
    sa.Column("mail_from", sa.String(320), nullable=False),
    sa.Column("mail_params", sa.Text, nullable=False, server_default="{}"),  # JSON object
    sa.Column("client_ip", sa.String(64), nullable=False),
    sa.Column("helo", sa.String(255), nullable=False),
    sa.Column("auth_user", sa.String(128), nullable=True),
    sa.Column("tls_version", sa.String(16), nullable=True),
    sa.Column("tls_cipher", sa.String(128), nullable=True),
    sa.Column("listener", sa.String(64), nullable=False),
    sa.Column("size", sa.Integer, nullable=False),  # len(trace_headers) + len(body)
    # The content of a message written before migration 0016: the headers we add (a prefix) and
    # the bytes exactly as received (unstuffed). Since then both are in `message_bodies`, and
    # these two are empty.
    sa.Column("trace_headers", sa.LargeBinary, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    # Header values events and webhooks need without parsing the body again.
    sa.Column("message_id_header", sa.String(998), nullable=True),  # Message-ID, as SendGrid's smtp-id
    sa.Column("subject", sa.Text, nullable=True),
    # X-SMTPAPI fields copied onto every event: {"category": [...], "unique_args": {...}}.
    sa.Column("tags", sa.Text, nullable=True),
    sa.Column("batch_id", sa.String(64), nullable=True, index=True),  # the API's batch_id (scheduled sends)
    # A sandbox account's message: captured by the delivery agent instead of delivered, until
    # `inbox release` clears this flag. `signature` holds the DKIM-Signature fields made then.
    sa.Column("sandbox", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("signature", sa.LargeBinary, nullable=True),
    # "out": submitted for delivery; "in": received for one of our inbound domains. `auth` (JSON,
    # inbound only): the SPF, DKIM, DMARC and reverse-DNS results, for the parse webhook.
    sa.Column("direction", sa.String(8), nullable=False, server_default="out"),
    sa.Column("auth", sa.Text, nullable=True),
    sa.Index("ix_messages_activity", "account_id", "direction", "id"),
)

SUBJECT_KEY = 200  # characters of the subject in its index


def subject_key(subject: sa.ColumnElement[str] | sa.Column[str]) -> sa.ColumnElement[str]:
    """The indexed prefix of a subject: the same SQL text in the index and in the query (a bound
    parameter in place of the literals would not match SQLite's expression index)."""
    return sa.func.substr(subject, sa.literal_column("1"), sa.literal_column(str(SUBJECT_KEY)))


# The activity page's orders (mailrelay.events.activity): an account's messages newest first
# (the queue id sorts by time), alone (ix_messages_activity above), by sender or by subject. The
# subject is indexed by its first SUBJECT_KEY characters (a PostgreSQL index entry holds at
# most about 2.7 KB); the query compares the whole subject after.
sa.Index("ix_messages_activity_from", messages.c.account_id, messages.c.direction,
         sa.func.lower(messages.c.mail_from), messages.c.id)
sa.Index("ix_messages_activity_subject", messages.c.account_id, messages.c.direction,
         subject_key(messages.c.subject), messages.c.id)

recipients = sa.Table(
    "recipients",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("address", sa.String(320), nullable=False),
    sa.Column("domain", sa.String(255), nullable=False),
    sa.Column("params", sa.Text, nullable=False, server_default="{}"),  # JSON object
    sa.Column("status", sa.String(16), nullable=False, server_default="queued"),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float, nullable=True),
    sa.Column("last_reply", sa.Text, nullable=True),
    sa.Column("updated_at", sa.Float, nullable=False),
    # A claimed recipient carries a lease: if the node dies mid-delivery the lease expires and
    # another (or the restarted) node picks it up at next_attempt_at, written before the attempt.
    sa.Column("lease_owner", sa.String(64), nullable=True),
    sa.Column("lease_until", sa.Float, nullable=True),
    # A failed recipient waiting to be reported (JSON): the DSN goes once no other recipient of
    # its message is being delivered, so one pass over a message makes one bounce.
    sa.Column("dsn_pending", sa.Text, nullable=True),
    # The message's account, copied here so the activity page finds an account's recipients
    # by address or status in their own index, newest message first (NULL only for rows
    # written before migration 0010 by a writer that did not know the column).
    sa.Column("account_id", sa.Integer, nullable=True),
    sa.Index("ix_recipients_status_next", "status", "next_attempt_at"),
    sa.Index("ix_recipients_activity", "account_id", "message_id", "id"),
    sa.Index("ix_recipients_activity_status", "account_id", "status", "message_id", "id"),
    # Partial: only recipients waiting to be reported, so the sweep for them stays cheap.
    sa.Index("ix_recipients_dsn_pending", "message_id", sqlite_where=sa.text("dsn_pending IS NOT NULL"),
             postgresql_where=sa.text("dsn_pending IS NOT NULL")),
)

sa.Index("ix_recipients_activity_to", recipients.c.account_id, sa.func.lower(recipients.c.address),
         recipients.c.message_id, recipients.c.id)

# Each category (SendGrid's X-SMTPAPI / v3 `categories`) of a message, also kept in its JSON
# `tags`: the activity page's category filter reads the account's messages of one category
# newest first from this primary key.
message_categories = sa.Table(
    "message_categories",
    metadata,
    sa.Column("account_id", sa.Integer, primary_key=True),
    sa.Column("category", sa.String(255), primary_key=True),
    sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    sa.Index("ix_message_categories_message_id", "message_id"),  # deleting a message (retention) finds them
)

# A message's content (mailrelay.store.bodies), in a row of its own so that retention frees its
# pages by deleting it: the headers we add (a prefix, as written) and the body exactly as received
# (unstuffed), compressed as one zstd frame. One row per message written since migration 0016.
message_bodies = sa.Table(
    "message_bodies",
    metadata,
    sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("trace_headers", sa.LargeBinary, nullable=False),
    sa.Column("body", sa.LargeBinary, nullable=False),
)

# The processes that hold leases, each under a name unique to one start of one process
# (spool.nodes). A row whose heartbeat stops changing belongs to a dead process: its leases
# are handed back at once instead of at lease expiry, and a live process's never are.
nodes = sa.Table(
    "nodes",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # the lease owner name
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("local_id", sa.String(80), nullable=True),  # boot id and PID namespace (spool.nodes)
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("heartbeat_at", sa.Float, nullable=False),
)

# One row per delivery attempt of one recipient: what `queue show` explains a wait with.
attempts = sa.Table(
    "attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("message_id", sa.String(32), sa.ForeignKey("messages.id", ondelete="CASCADE"), nullable=False,
              index=True),
    # indexed: deleting a recipient (retention) looks up its attempts
    sa.Column("recipient_id", sa.Integer, sa.ForeignKey("recipients.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("mx_host", sa.String(255), nullable=True),
    sa.Column("ip", sa.String(64), nullable=True),
    sa.Column("tls", sa.String(160), nullable=True),  # "TLSv1.3 TLS_AES_256_GCM_SHA384", or null
    sa.Column("reply", sa.Text, nullable=False),  # remote reply or our own diagnostic
    sa.Column("outcome", sa.String(16), nullable=False),  # delivered | deferred | bounced
)

# What happened to mail, for people and webhooks: processed, delivered, deferred, bounced,
# expired, dropped, captured, deleted, bounced-by-operator, retried-by-operator, suppressed...
events = sa.Table(
    "events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.Integer, nullable=True),
    sa.Column("message_id", sa.String(32), nullable=True, index=True),
    sa.Column("recipient", sa.String(320), nullable=True),
    sa.Column("type", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=False, server_default=""),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("attempt", sa.Integer, nullable=True),  # delivery attempt number (1 = first)
    sa.Column("reply", sa.Text, nullable=True),  # the remote server's reply, or our diagnostic
    sa.Column("mx_host", sa.String(255), nullable=True),
    # The webhook outbox, inside the event row: due time of the next POST of this event (null:
    # nothing to send: no webhook, or sent, or given up), tries so far, and a claim lease.
    sa.Column("webhook_due_at", sa.Float, nullable=True),
    sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("webhook_lease_until", sa.Float, nullable=True),
    sa.Index("ix_events_account_id", "account_id", "id"),
    # Partial: only rows still to be posted are in it, so it stays small.
    sa.Index("ix_events_webhook_due", "webhook_due_at", sqlite_where=sa.text("webhook_due_at IS NOT NULL"),
             postgresql_where=sa.text("webhook_due_at IS NOT NULL")),
)

suppressions = sa.Table(
    "suppressions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("address", sa.String(320), nullable=False),  # lower-cased
    sa.Column("reason", sa.Text, nullable=False, server_default=""),
    sa.Column("created_at", sa.Float, nullable=False),
    # SendGrid's list: bounces, blocks, invalid_emails, spam_reports, unsubscribes (global).
    sa.Column("kind", sa.String(32), nullable=False, server_default="bounces"),
    sa.UniqueConstraint("account_id", "address", name="uq_suppressions_account_address"),
)

# Unsubscribe groups (SendGrid's ASM) and the addresses that left each.
asm_groups = sa.Table(
    "asm_groups",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(30), nullable=False),
    sa.Column("description", sa.String(100), nullable=False, server_default=""),
    sa.Column("is_default", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.Float, nullable=False),
)

asm_suppressions = sa.Table(
    "asm_suppressions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("group_id", sa.Integer, sa.ForeignKey("asm_groups.id", ondelete="CASCADE"), nullable=False),
    sa.Column("address", sa.String(320), nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("group_id", "address", name="uq_asm_suppressions_group_address"),
)

# Dynamic templates (Handlebars) and their versions; one version is active.
templates = sa.Table(
    "templates",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("generation", sa.String(16), nullable=False, server_default="dynamic"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

template_versions = sa.Table(
    "template_versions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("template_id", sa.String(64), sa.ForeignKey("templates.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("subject", sa.Text, nullable=False, server_default=""),
    sa.Column("html_content", sa.Text, nullable=False, server_default=""),
    sa.Column("plain_content", sa.Text, nullable=False, server_default=""),
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("editor", sa.String(16), nullable=False, server_default="code"),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Batches of scheduled sends (SendGrid's batch_id): paused or cancelled before their send_at.
mail_batches = sa.Table(
    "mail_batches",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=True),  # NULL, "pause" or "cancel"
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# Sender domains of an account, with their DKIM keys (PEM, PKCS#8).
domains = sa.Table(
    "domains",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False,
              index=True),
    sa.Column("name", sa.String(255), nullable=False, unique=True),  # lower-case, no trailing dot
    sa.Column("selector", sa.String(63), nullable=False),
    sa.Column("rsa_private_key", sa.Text, nullable=True),
    sa.Column("ed25519_private_key", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    # Receiving: mail for this domain is accepted on port 25 from anyone (only for known
    # addresses, or any with catch_all) and handed to `inbound_webhook` (SendGrid's Inbound
    # Parse; `inbound_raw`: the whole message in one field), or kept in the inbox without one.
    sa.Column("inbound", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("catch_all", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("inbound_webhook", sa.Text, nullable=True),
    sa.Column("inbound_raw", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("dmarc_policy", sa.String(16), nullable=False, server_default="monitor"),  # monitor | enforce
    # When its DNS records were checked and found right (or an operator forced it): only a
    # verified domain is usable for sending (require_own_domain, DKIM signing).
    sa.Column("verified_at", sa.Float, nullable=True),
    # DKIM key rotation: the next key, made and published but not signing yet (its selector;
    # the same algorithms as the current key), and once it took over, the selectors of the key
    # it replaced (space-separated) and when (their records may be removed a few days later).
    sa.Column("next_selector", sa.String(63), nullable=True),
    sa.Column("next_rsa_private_key", sa.Text, nullable=True),
    sa.Column("next_ed25519_private_key", sa.Text, nullable=True),
    sa.Column("rotation_started_at", sa.Float, nullable=True),
    sa.Column("previous_selectors", sa.String(127), nullable=True),
    sa.Column("retired_at", sa.Float, nullable=True),
)

# Known recipient addresses of inbound domains (`mailrelay address add user@example.com`).
addresses = sa.Table(
    "addresses",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("domain_id", sa.Integer, sa.ForeignKey("domains.id", ondelete="CASCADE"), nullable=False),
    sa.Column("local_part", sa.String(64), nullable=False),  # lower-cased
    sa.Column("created_at", sa.Float, nullable=False),
    sa.UniqueConstraint("domain_id", "local_part", name="uq_addresses_domain_local"),
)

# Failed logins (SMTP AUTH and API keys) per client address, shared by every process and node
# of the database (mailrelay.accounts.lockout), so that more processes give an attacker no
# more attempts. Rows go once their window and lock-out have passed.
auth_failures = sa.Table(
    "auth_failures",
    metadata,
    sa.Column("client", sa.String(64), primary_key=True),  # an IPv4 address or an IPv6 /64
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("window_start", sa.Float, nullable=False),  # the window's first failure (epoch seconds)
    sa.Column("locked_until", sa.Float, nullable=True),
)

# Signed-in dashboard sessions (mailrelay.web). The cookie holds a random token; only its
# SHA-256 is stored, so a copy of the database signs nobody in. Any node can check a session.
web_sessions = sa.Table(
    "web_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("csrf", sa.String(64), nullable=False),  # the token every form of the session carries
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
)

# The event webhook's newest POSTs per account (events.postlog keeps the last 50): when, the
# URL (redacted), how many events, the HTTP status or why none, how long the answer took.
webhook_posts = sa.Table(
    "webhook_posts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("account_id", sa.Integer, sa.ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("status", sa.Integer, nullable=True),  # null: no answer (timeout, refused, ...)
    sa.Column("seconds", sa.Float, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("test", sa.Boolean, nullable=False, server_default=sa.false()),  # the settings' test POST
    sa.Index("ix_webhook_posts_account_id", "account_id", "id"),
)
