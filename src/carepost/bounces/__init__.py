"""Bounce, complaint and auto-reply messages: parse (`parse.py`) and decide (`classify.py`).
Both are pure: bytes in, plain data out, no database and no logging of message content."""
