"""One plant, many sites (docs/plant.md).

``messages`` (the versioned MQTT payloads and their bounds) and ``plans`` (a plant schedule cut per
site, and a site plan checked and turned back into a gateway's schedule) are domain code without I/O,
shared by both ends. ``config`` (the plant file), ``ingest`` (the central's tables) and ``central``
(`vpp central`) are the aggregator's application layer.
"""
