"""Media decoding: images (and, later, video frames)."""
