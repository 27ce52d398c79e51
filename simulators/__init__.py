"""Battery physics and device simulators that speak the same protocols as real devices."""
