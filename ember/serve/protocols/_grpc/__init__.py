"""Generated KServe v2 gRPC modules (``inference.GRPCInferenceService``); see ``generate.py``."""

__all__: list[str] = []
