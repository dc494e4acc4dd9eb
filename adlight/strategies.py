"""Lightning's DDP for models that learn nothing by gradient.

The feature-head models (``OneClassSVMModel``, the patch-feature models) fit a head on
frozen features: they have no parameter that requires a gradient, and torch's
``DistributedDataParallel`` refuses such a module ("DistributedDataParallel is not needed
when a module doesn't have any parameter that requires a gradient"), so ``strategy: ddp``
failed for them. There is nothing for DDP to synchronise in such a model; the processes,
the samplers and the collectives (the fitted heads' all_gather, the metrics' sync) work
without the wrapper.

A model with several optimisers stepped in turn (the GAN: a discriminator step whose loss
never touches the generator, then a generator step with the discriminator frozen) leaves
parameters out of every backward pass, which torch's DDP refuses unless it looks for them
("parameters that were not used in producing the loss"). Such a model says so with
``ddp_find_unused_parameters = True``; the search costs a graph traversal per backward, so
the other models keep Lightning's default (off).

The CLI uses this strategy for ``strategy: ddp``; from Python pass
``strategy=adlight.strategies.DDPStrategy()``.
"""

from __future__ import annotations

from lightning.pytorch.strategies import DDPStrategy as LightningDDPStrategy


class DDPStrategy(LightningDDPStrategy):
    """``DDPStrategy`` that leaves a model with no trainable parameter unwrapped and finds
    unused parameters for a model that asks for it."""

    def configure_ddp(self) -> None:
        if not any(p.requires_grad for p in self.model.parameters()):
            return
        if getattr(self.lightning_module, "ddp_find_unused_parameters", False):
            self._ddp_kwargs.setdefault("find_unused_parameters", True)
        super().configure_ddp()
