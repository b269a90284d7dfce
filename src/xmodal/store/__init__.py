"""Library store: SQLite catalog, vector storage, index backends (exact, Faiss)."""
