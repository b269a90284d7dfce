"""Vector index backends (exact float16 scan, Faiss ANN), file format and tuning.

The public names are gathered in `xmodal.store.vector_index`.
"""
