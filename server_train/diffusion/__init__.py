"""Scalp diffusion model and DiffuseIT-M translation augmentation (server only, torch).

``unet`` (conditional U-Net), ``schedule`` (DDPM / DDIM), ``data`` (training frames), ``train``
(resumable, DDP), ``translate`` (DiffuseIT-M), ``augment`` (balanced sets with provenance),
``quality`` (translation metrics and grids), ``cli`` (the commands).
"""
