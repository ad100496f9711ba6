"""Serial link to the scanner's microcontroller (button, LED ring, battery).

Planned by the firmware-bridge issue; nothing here yet.
"""
