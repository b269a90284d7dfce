"""Datasets xmodal generates itself: `synth-shapes`, captioned images (and videos) with known answers."""

from xmodal.datasets.synth_shapes import ANNOTATIONS, SynthConfig, generate_synth_shapes

__all__ = ["ANNOTATIONS", "SynthConfig", "generate_synth_shapes"]
