"""Mail received for our own inbound domains: the parse webhook (SendGrid's Inbound Parse)."""
