"""Lightning's DDP for models that learn nothing by gradient.

The feature-head models (``OneClassSVMModel``, the patch-feature models) fit a head on
frozen features: they have no parameter that requires a gradient, and torch's
``DistributedDataParallel`` refuses such a module ("DistributedDataParallel is not needed
when a module doesn't have any parameter that requires a gradient"), so ``strategy: ddp``
failed for them. There is nothing for DDP to synchronise in such a model; the processes,
the samplers and the collectives (the head fitter's all_gather, the metrics' sync) work
without the wrapper. The CLI uses this strategy for ``strategy: ddp``; from Python pass
``strategy=adlight.strategies.DDPStrategy()``.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy as LightningDDPStrategy


class DDPStrategy(LightningDDPStrategy):
    """``DDPStrategy`` that leaves a model with no trainable parameter unwrapped."""

    def configure_ddp(self) -> None:
        if any(p.requires_grad for p in self.model.parameters()):
            super().configure_ddp()
