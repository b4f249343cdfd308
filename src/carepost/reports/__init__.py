"""Campaign reporting: de-identified aggregates of what happened to a campaign's messages
(delivery, bounces, complaints, unsubscribes, opens and clicks, human and machine apart),
its splits (recipient domain, link, segment clause, day and hour), a CSV export and an
SVG chart. `measures.py`, `campaign.py` and `splits.py` assemble numbers from plain rows
(no I/O); `queries.py` is the grouped SQL; `service.py` puts them together and audits the
reading; `csv_export.py` and `chart.py` render (pure), `files.py` writes; `commands.py`
is `carepost report`.
"""
