"""wrdata: live market data from seven venues through one async API, recorded, queried, replayed."""

from __future__ import annotations

from .channels import Channel, parse_channel
from .message import StreamMessage

__all__ = ["DataStream", "StreamMessage", "Channel", "parse_channel"]
__version__ = "0.1.0"


def __getattr__(name: str):
    # DataStream pulls in the streaming layer; import it on first use.
    if name == "DataStream":
        from .datastream import DataStream

        return DataStream
    raise AttributeError(name)
