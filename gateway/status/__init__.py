"""What the box tells the outside: the state snapshot, the event bus, MQTT, the page."""
