"""Operating a running sidecar: what an operator sees and changes without a restart.

``admin`` (the HTTP endpoint on its own thread), ``metrics`` (derived from
connection records, read at scrape time), ``accesslog`` (one line per
connection), ``reload`` (validate-then-swap, the file watch, the expiry
watch) and ``live`` (what a reload may change, swapped as one reference).
None of it is on the data path: the data plane only reads ``live``'s one
reference per accepted connection and hands each record to the sinks.
"""
