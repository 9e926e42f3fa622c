"""Email authentication standards: DKIM signing (and later verification), SPF, DMARC."""
