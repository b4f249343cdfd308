"""Campaign reporting: de-identified aggregates of what happened to a campaign's messages
(delivery, bounces, complaints, unsubscribes, opens and clicks, human and machine apart),
its splits (recipient domain, link, segment clause, day and hour), a CSV export and an
SVG chart. `campaign.py` and `splits.py` assemble numbers from plain rows (no I/O),
`queries.py` is the grouped SQL, `service.py` puts them together, `commands.py` is the CLI.
"""
