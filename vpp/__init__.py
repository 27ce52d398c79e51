"""VPP engine: the domain (fleet, markets, schedules) and the application (config, CLI)."""

__version__ = "0.1.0"
