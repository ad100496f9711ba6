"""The contracts: frame geometry, tensor names and preprocessing (one source of truth),
result records, MQTT topics and messages, their JSON Schemas, and the errors every command shares."""
