"""The scanner application: the per-frame pipeline, the frame loop, preview and overlays,
the run report and the runtime config."""
