"""recstream: a real-time, LLM-driven recommendation pipeline on Kafka."""

__version__ = "0.1.0"
