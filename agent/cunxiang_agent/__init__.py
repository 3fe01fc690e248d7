"""The cunxiang speaker agent: one loudspeaker box's program (docs/agent.md).

Installable alone (package cunxiang-agent): it shares the wire protocol and signature checks with
the server through cunxiang_shared and never imports the server's packages.
"""
