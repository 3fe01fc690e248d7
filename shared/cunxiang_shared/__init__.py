"""What the cunxiang server and the speaker agent share, and nothing else.

- `protocol`: the wire protocol v1 (topics, messages, encode/parse, limits; docs/protocol.md)
- `signing`: command signatures (canonical JSON, Signer, Verifier; docs/protocol.md §9)
- `states`: the delivery states and which of them are final
- `broker`: the broker URL parser
- `areas`: the structure of 12-digit area codes

It depends on pydantic and cryptography only, and never imports the server.
"""
