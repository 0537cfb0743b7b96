"""Checkpoints in and out: cgh's own checkpoint files (``files``: atomic writes, ``weights_only`` reads, checks), the
published layouts of other code bases (``formats``), export to torchvision and detectron2 (``export``), and a
pretrained backbone from any of them (``pretrained``, behind ``cgh.load_backbone``)."""
