"""Device I/O behind one small async interface (``base.DeviceAdapter``): SunSpec and register-map
Modbus TCP, MQTT. See docs/adapters.md."""
