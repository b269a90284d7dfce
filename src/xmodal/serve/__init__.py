"""HTTP serving."""
