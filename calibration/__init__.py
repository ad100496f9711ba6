"""INT8 calibration and optical calibration (micrometres per pixel).

Planned by the export/calibration issue; nothing here yet.
"""
