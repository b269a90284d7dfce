"""Evaluation: retrieval metrics, dataset readers, benchmarks, reports and plots."""
