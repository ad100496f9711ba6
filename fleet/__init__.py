"""The fleet side of MQTT: the consumer that stores results and asks scanners to resend gaps.
It shares only ``device.contracts`` with the scanner."""
