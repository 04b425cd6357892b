"""The sans-IO connection core: events in, actions out (no sockets, no clock).

The connection's path reads from the file names: accept (admission),
handshake (failure mapping), verify (outbound expect), authorize (inbound
policy), connect (upstream addresses), relay (timers), close (the record);
machine.py ties them together in one transition table.
"""

from proxy.connection.machine import Connection, ConnectionSpec, ConnectionState, Direction, Mode

__all__ = ["Connection", "ConnectionSpec", "ConnectionState", "Direction", "Mode"]
