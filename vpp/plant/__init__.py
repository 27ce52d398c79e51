"""One plant, many sites: the messages between site gateways and the central aggregator (no I/O here)."""
