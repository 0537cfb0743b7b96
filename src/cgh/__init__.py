"""cgh: self-supervised representation learning with cross-context learning between global and hypercolumn features.

Python API (see README):
    cgh.load_backbone(path)      -> a pretrained backbone giving pooled global and hypercolumn features
    cgh.losses.info_nce / relation_loss
"""

__version__ = "0.1.0"
