"""The paper's learned proposal network: MaskFormer trained on seen classes with a frozen
CLIP-text classifier (model, training, saved weights)."""
