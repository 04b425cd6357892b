"""The embedded SPIFFE Workload API agent: attestation, registrations, a local CA.

Start it from code (the demo, tests)::

    config = load_agent_config("examples/agent.yaml")      # or agent_config(socket_path=..., entries=[...])
    async with trio.open_nursery() as nursery:
        handle = await nursery.start(serve_agent, config)  # AgentHandle: socket_path, endpoint, state
        ...
        nursery.cancel_scope.cancel()                      # stops it and removes the socket

or from the command line: ``spiffe-sidecar agent --config agent.yaml``.
"""

from proxy.agent.config import AgentConfig, TrustDomainConfig, agent_config, load_agent_config, parse_agent_config
from proxy.agent.server import AgentHandle, serve_agent

__all__ = ["AgentConfig", "AgentHandle", "TrustDomainConfig", "agent_config", "load_agent_config",
           "parse_agent_config", "serve_agent"]
