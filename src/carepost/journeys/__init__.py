"""Journeys: automated, durable workflows that move each enrolled contact through steps
(send, wait, branch, ...). `definition.py` is the checked shape of a journey; `document.py`
reads one from YAML or JSON text."""
