"""vidbatch: turn a video library into embeddings and labels with Ray Data, PyAV and ResNet."""

__version__ = "0.1.0"
