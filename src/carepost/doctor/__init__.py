"""Sender health: `carepost doctor dns` checks what a sending domain publishes in DNS.

Pure check functions (spf, dkim, dmarc, mx, sts) over plain DNS answers; `runner.py`
gathers the answers through the injected resolver and fetcher; `commands.py` is the CLI.
"""
