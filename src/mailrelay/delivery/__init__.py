"""Outbound delivery: the agent that works the queue, and what it uses, from the top down.

agent      claims due recipients, runs one job per message and domain, records the outcomes
routing    where a domain's mail goes (routes, MX, address filtering) and the route-plan cache
transfer   one message handed to one remote server, each reply judged; the idle-connection pool
wire       the SMTP client on the wire (pipelining, STARTTLS, AUTH, body encoding)
replies    the remote server's replies parsed as they arrive, with their bounds, and the errors
classify   what a reply or error means: delivered, deferred or bounced
outcomes   writing those outcomes to the queue, with the bounces and delay warnings they call for
dsn        the bounce and delay-warning messages (RFC 3464)
signing    DKIM signatures made just before sending, with the keys of the From: domain
operator   the operator's queue actions: retry, delete, bounce
"""
