"""Frames in: camera and file sources behind one URI style, and image reading with clear errors."""
