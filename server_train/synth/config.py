"""Configuration and result types of the synthetic hair renderer.

All knobs live here with their defaults (one place). Pixel quantities are given for the
configured frame size; the renderer rescales nothing, so a 1280x960 config should also
scale the width/length ranges if the same magnification is wanted.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

__all__ = ["SynthConfig", "Sample", "hard_variant", "MODES", "PALETTES"]

MODES = ("scalp", "trimmed")

# Hair palettes: name -> (base BGR, relative weight in the default mix).
PALETTES: dict[str, tuple[tuple[int, int, int], float]] = {
    "black": ((40, 35, 34), 0.55),
    "dark_brown": ((30, 38, 52), 0.16),
    "brown": ((50, 72, 100), 0.09),
    "grey": ((120, 120, 124), 0.08),
    "white": ((205, 212, 218), 0.06),
    "blond": ((128, 172, 198), 0.06),
}


@dataclass(frozen=True)
class SynthConfig:
    """Everything that shapes a synthetic frame; every field has its default here.

    Ranges are (low, high) tuples, probabilities in [0, 1], widths and lengths in pixels
    of the output frame (``width`` x ``height``).
    """

    mode: str = "scalp"
    height: int = 480
    width: int = 640
    hard: bool = False
    backgrounds: str | None = None
    # --- scalp (long hair) geometry
    n_strands: tuple[int, int] = (5, 120)  # log-uniform per frame
    strand_len: tuple[float, float] = (120.0, 1100.0)
    width_median: tuple[float, float] = (4.0, 12.5)  # per-frame typical diameter
    width_spread: float = 0.28  # per-strand lognormal sigma
    width_clip: tuple[float, float] = (1.0, 14.0)
    thin_width: tuple[float, float] = (1.0, 3.0)
    p_thin: float = 0.18  # strand drawn 1-3 px (vellus / fine)
    p_tapered_tip: float = 0.7  # tip tapers (else blunt / broken)
    curl: tuple[float, float] = (0.0, 0.35)  # power-curve bend amplitude (fraction of L)
    angle_spread: tuple[float, float] = (0.08, 0.9)  # radians around the frame's flow
    follicle_group_probs: tuple[float, ...] = (0.35, 0.35, 0.2, 0.1)  # 1..4 strands
    p_follicle_in_frame: float = 0.35  # share of follicles placed inside the frame
    # --- appearance
    p_mixed_palette: float = 0.2  # per-strand palette differs from the frame's
    p_translucent: float = 0.3  # for grey / white / blond strands
    alpha_translucent: tuple[float, float] = (0.35, 0.8)
    p_defocus_frame: float = 0.3  # some strands out of the focal plane
    defocus_share: tuple[float, float] = (0.1, 0.4)
    defocus_sigma: tuple[float, float] = (1.5, 5.0)
    p_defocus_front: float = 0.3  # a defocused strand lies in front (thicker)
    # --- trimmed (phototrichogram) geometry
    stub_width: tuple[float, float] = (4.0, 22.0)  # 70x: terminal shafts of 60-110 um are 11-20 px at 640
    stub_len: tuple[float, float] = (20.0, 110.0)
    p_undersize: float = 0.12
    undersize_width: tuple[float, float] = (2.0, 5.0)
    follicle_spacing: tuple[float, float] = (95.0, 240.0)  # 70x trichoscopy: ~6-40 follicles a frame
    p_tight_group: float = 0.45  # stubs of one follicle run side by side, touching (they merge into one blob)
    p_soft_stubs: float = 0.4  # frame whose stubs are slightly out of focus
    p_long_hair_trimmed: float = 0.3
    # --- noise that is never hair
    dandruff_probs: tuple[float, float, float, float] = (0.3, 0.35, 0.25, 0.1)  # none..severe
    p_sebum: float = 0.35
    p_erythema: float = 0.2
    p_letterbox: float = 0.08
    p_annotations: float = 0.25  # measurement overlays burned in by capture software (never hair)
    # --- optics
    p_frame_blur: float = 0.6
    frame_blur_sigma: tuple[float, float] = (0.5, 1.4)
    p_desaturate: float = 0.15
    p_vignette: float = 0.6
    noise_sigma: tuple[float, float] = (1.0, 5.0)
    jpeg_quality: tuple[int, int] = (55, 95)
    p_jpeg: float = 0.7
    p_background_real: float = 0.3  # used only when ``backgrounds`` is set

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.height < 32 or self.width < 32:
            raise ValueError("frame must be at least 32x32")

    def resolved(self) -> SynthConfig:
        """The config actually used: ``hard_variant(self)`` when ``hard`` is set."""
        return hard_variant(self) if self.hard else self

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable dict of all fields (tuples become lists)."""
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def hard_variant(cfg: SynthConfig) -> SynthConfig:
    """The hard held-out mix: thinner, paler, denser, blurrier, dirtier.

    More 1-2 px strands, grey/white/translucent hair, dense crossings and bundles,
    out-of-focus strands and heavy dandruff.
    """
    return replace(
        cfg,
        n_strands=(20, 160),
        width_median=(2.0, 8.0),
        p_thin=0.45,
        thin_width=(1.0, 2.2),
        angle_spread=(0.3, 1.4),
        follicle_group_probs=(0.2, 0.3, 0.3, 0.2),
        p_mixed_palette=0.6,
        p_translucent=0.7,
        alpha_translucent=(0.25, 0.65),
        p_defocus_frame=0.7,
        defocus_share=(0.2, 0.5),
        p_defocus_front=0.4,
        dandruff_probs=(0.0, 0.15, 0.35, 0.5),
        p_sebum=0.6,
        p_undersize=0.3,
        p_frame_blur=0.7,
        noise_sigma=(2.0, 8.0),
        jpeg_quality=(40, 85),
        p_annotations=0.4,
    )


@dataclass(frozen=True)
class Sample:
    """One rendered frame and its exact labels.

    image: HxWx3 uint8 BGR. mask: HxW uint8 {0,1}, 1 = hair (geometric coverage >= 0.5,
    also where hidden under other hair or blurred; never dandruff, scale or skin lines).
    instances: HxW int32, 0 = background, k >= 1 = topmost kept strand (the few pixels
    where a dropped strand, < 8 visible pixels, is on top read 0 here but 1 in ``mask``). thickness_px: (N,)
    float32 mean diameter of each strand's in-frame part, index k-1 for id k. centres:
    (N, 2) float32 (x, y) arc-length midpoint of the in-frame centreline. centrelines:
    N arrays (K, 2) float32 (x, y). meta: JSON-serialisable description.
    """

    image: np.ndarray
    mask: np.ndarray
    instances: np.ndarray
    thickness_px: np.ndarray
    centres: np.ndarray
    centrelines: list[np.ndarray]
    meta: dict[str, Any]

    @property
    def count(self) -> int:
        """Number of kept strands (>= 8 visible mask pixels each)."""
        return int(self.thickness_px.shape[0])
