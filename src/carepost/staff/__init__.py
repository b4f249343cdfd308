"""Staff accounts and access: users, roles built from permissions, passwords, TOTP,
login with throttling, sessions, API keys and break-glass emergency access (issue 9).

Not to be confused with `carepost.account`, which holds account-wide *settings*."""
