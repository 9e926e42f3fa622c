"""Email authentication standards: DKIM signing and verification, SPF, DMARC and
Authentication-Results. Given a resolver; never imports a DNS backend, the queue or a server."""
