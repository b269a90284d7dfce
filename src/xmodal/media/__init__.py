"""Media decoding: images (xmodal.media.image), video probing and frame sampling (xmodal.media.video)."""
