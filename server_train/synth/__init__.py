"""Synthetic scalp-microscope frames whose drawing is the hair label (ScalpVision-style).

``render(seed, config)`` returns a ``Sample`` (image, mask, instances, per-strand
thickness/centres/centrelines, meta); ``write_dataset`` writes a folder of them;
``contact_sheet`` tiles frames for visual comparison with real ones.
"""

from .config import MODES, PALETTES, Sample, SynthConfig, hard_variant
from .dataset import TRUTH_KEYS, write_dataset
from .render import MIN_VISIBLE_PX, render, render_debug, render_index
from .sheet import contact_sheet

__all__ = [
    "MODES",
    "PALETTES",
    "MIN_VISIBLE_PX",
    "Sample",
    "SynthConfig",
    "TRUTH_KEYS",
    "contact_sheet",
    "hard_variant",
    "render",
    "render_debug",
    "render_index",
    "write_dataset",
]
