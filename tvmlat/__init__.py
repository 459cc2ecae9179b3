"""tvmlat: predict neural-network block and network latency on a target, calibrated with TVM Relax."""

__version__ = "0.1.0"
