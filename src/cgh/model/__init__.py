"""The model's parts: the ResNet backbone (``backbone``, with the split batch norm of ``splitbn``), the projection and
hypercolumn heads (``heads``), the feature queue (``queue``), the EMA teacher (``ema``) and the collapse diagnostics
computed on features (``diagnostics``). The methods (``cgh.methods``) assemble them with the losses (``cgh.losses``)."""
