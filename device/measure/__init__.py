"""From a frame and its hair mask to numbers: the quality gate, hair count and thickness, the
skeleton graph behind them, and the optical profile (micrometres per pixel)."""
