"""One-off messages (issue 9): a single treatment, operations or transactional message to
one contact, through the same gate and outbox as a campaign, in the outbox's first lane."""
