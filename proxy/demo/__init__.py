"""`spiffe-sidecar demo`: the embedded agent, two apps behind their sidecars, three checks.

apps.py (the tiny HTTP backend and client), processes.py (sidecar
subprocesses: start, wait for ready, read their records, stop), scenario.py
(the steps and the checks).
"""
