"""The project's exception hierarchy: one root, specific subclasses.

Lives in models/ (the innermost layer) so that every layer can raise and catch these without
importing Kafka or Faust.
"""


class RecstreamError(Exception):
    """Root of every error recstream raises on purpose."""


class ValidationError(RecstreamError, ValueError):
    """A record or argument failed validation; the message says which field and why."""


class ConfigError(RecstreamError, ValueError):
    """A setting is missing or inconsistent."""


class StateError(RecstreamError):
    """Serialized state could not be decoded, or two states cannot be merged."""


class ModelError(RecstreamError):
    """The language model could not be loaded or used."""


class KafkaToolError(RecstreamError):
    """The local Kafka broker could not be prepared, started or stopped."""


class DatasetError(RecstreamError):
    """A dataset folder has an unknown layout or unreadable files."""


class JobFailed(RecstreamError):
    """An evaluation job raised, or its worker process died (e.g. killed for memory)."""


class SnapshotError(StateError):
    """A sequence-model snapshot was refused: corrupt, of another format or catalogue, or of
    a shape the reader cannot use. The message says which check failed."""


class ReplayCancelled(RecstreamError):
    """A replay stopped early because a replay running beside it failed."""
