"""The ports tests give their brokers: free, and never one an outgoing connection can take."""

import socket

import pytest
from mosquitto import ephemeral_ports, free_port


def test_a_broker_port_is_free_and_below_the_ephemeral_range() -> None:
    low, high = ephemeral_ports()
    assert 1024 <= low <= high
    if low - 1024 < 1000:
        pytest.skip(f"ephemeral range starts at {low}: free_port takes any port the kernel gives")
    ports = {free_port() for _ in range(20)}
    assert all(1024 <= p < low for p in ports)
    assert len(ports) > 1  # drawn at random, not one fixed port
    for port in ports:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))  # free now


def test_outgoing_connections_take_their_local_ports_from_the_ephemeral_range() -> None:
    # Why the broker's port is drawn below it: a client's local port comes from this range.
    low, high = ephemeral_ports()
    with socket.socket() as server, socket.socket() as client:
        server.bind(("127.0.0.1", free_port()))
        server.listen(1)
        client.connect(server.getsockname())
        assert low <= client.getsockname()[1] <= high
