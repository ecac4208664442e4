"""Streaming stages: every transformation of backup bytes is a :class:`~.stages.Stage`."""
