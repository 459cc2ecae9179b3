"""Runners turn a block into a RunResult: compile it for a target and time it (or pretend to)."""

from .base import RunResult, Runner, adaptive_measure

__all__ = ["RunResult", "Runner", "adaptive_measure"]
