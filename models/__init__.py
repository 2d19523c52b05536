"""Pure computation: decay, posteriors, scoring, weight updates, metrics, encoders.

Nothing in this package imports Kafka or Faust, and nothing reads settings: every
hyperparameter is a constructor or function argument. A test enforces the import rule.
"""
