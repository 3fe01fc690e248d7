"""Where the MQTT broker is: the one parser of broker URLs, for the server and the speaker agent."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883


@dataclass(frozen=True)
class BrokerAddress:
    """Where and how to reach the MQTT broker."""

    host: str
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: str | None = None  # CA bundle that signed the broker's certificate (default: system CAs)
    cert_file: str | None = None  # client certificate, when the broker requires one
    key_file: str | None = None


def parse_broker_url(url: str) -> BrokerAddress:
    """Parse ``mqtt://[user:pass@]host[:port]`` (or ``mqtts://`` for TLS, default port 8883).

    Anything the connection would silently ignore is refused rather than dropped: another
    scheme, a missing host, a port outside 1-65535, a path, query or fragment.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ValueError(
            f"broker URL must look like mqtt://[user:pass@]host:port (mqtts:// for TLS), got {url!r}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in broker URL {url!r}") from None
    if port == 0:
        raise ValueError(f"bad port in broker URL {url!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL must not have a path, query or fragment: {url!r}")
    tls = parts.scheme == "mqtts"
    return BrokerAddress(
        host=parts.hostname,
        port=port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=tls,
    )
