"""Secure message pickup: what a recipient whose server cannot take a PHI-bearing message
over verified TLS (or a `secure_delivery` message) reads instead, after proving who they
are with a one-time code or their date of birth."""
