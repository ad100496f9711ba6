"""Sync: the on-disk outbox, the MQTT link and the sync config."""
