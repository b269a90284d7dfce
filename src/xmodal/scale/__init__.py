"""Scale-out: embed collections on Ray into sharded embeddings, import them into a library, and
build and serve a compressed Faiss index over them within a memory budget."""
