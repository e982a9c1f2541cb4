"""The trained networks of the paper: the proposal network (MaskFormer with a CLIP-text
classifier, `maskformer`) and the FCN baseline (`fcn`)."""
