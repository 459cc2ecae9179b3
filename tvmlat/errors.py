"""The project's exception types. A TvmlatError is a user-facing problem: the CLI prints its
message on one line and exits non-zero, without a traceback."""


class TvmlatError(Exception):
    """Base class: something the user can fix (bad input, missing file, wrong version...)."""


class TargetError(TvmlatError):
    """A target file is missing, malformed or names something unsupported."""


class ModelRefError(TvmlatError):
    """A MODEL_REF could not be loaded or returned the wrong thing."""


class DatasetError(TvmlatError):
    """A dataset file is missing, malformed or incompatible with the run."""


class PredictorError(TvmlatError):
    """A predictor file is missing, malformed, of a newer version, or used wrongly."""


class NotFittedError(PredictorError):
    """predict() was called before fit()."""


class CompileError(TvmlatError):
    """torch.export, the Relax import or tvm.compile failed for a block."""


class MissingExtraError(TvmlatError):
    """An optional dependency is not installed."""

    def __init__(self, package: str, extra: str):
        super().__init__(f"{package} is not installed: pip install 'tvmlat[{extra}]'")


class RPCError(TvmlatError):
    """The RPC tracker can't be reached, or holds no (free) server for the key asked for."""
