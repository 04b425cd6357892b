# cython: language_level=3
"""The compiled hot path (being built): see proxy/tls/engine.py for the contract."""

NAME = "fastpath"
