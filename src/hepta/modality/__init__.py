"""Modalities beyond text: tokenizers that turn images into discrete codes and back, the image
spans those codes form in the shared id space, and chat content parts rendered as token ids.

Early fusion (Chameleon, Emu3): an image is a span of ordinary token ids, so the MoE router and
the experts see image tokens exactly as they see text. This layer sits above `model/` (whose
modules the image autoencoder reuses nothing of) and below `train/` and `infer/`.
"""
