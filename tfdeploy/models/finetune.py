"""`FineTune`: unfreeze the top of a transfer model's base at a chosen epoch, inside one ``fit``.

In Keras 2 a change of ``trainable`` only takes effect in a newly traced train
function, and the optimizer has no slots for the newly trainable weights. At
the chosen epoch the callback therefore unfreezes the layers, gives the model
a fresh optimizer of the same kind and settings (at the lower learning rate,
continuing the step count) and a fresh train function: the same effect as the
usual "set trainable, recompile, fit again", without the user's ``fit`` call
changing. BatchNormalization layers stay frozen, which in Keras 2 also keeps
them in inference mode (their moving statistics do not move).
"""

import copy

from tfdeploy._keras import build_optimizer_state, keras
from tfdeploy.errors import ModelTypeError

_POOLING = (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)


def _inner(layer):
    """The layer a tfmot (pruning/QAT/cluster) wrapper wraps, else the layer."""
    return getattr(layer, "layer", layer)


def base_layers(model):
    """The base layers of a transfer model, in order: the nested base's, or (flat model) the
    layers before the last global pooling that has no ``keepdims`` (the head's pooling)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer, list(layer.layers)
    cut = None
    for i, layer in enumerate(model.layers):
        inner = _inner(layer)
        if isinstance(inner, _POOLING) and not getattr(inner, "keepdims", False):
            cut = i
    if cut is None:
        raise ModelTypeError(
            f"Model {model.name!r} has neither a nested base model nor a global pooling layer "
            "ending its base; FineTune cannot tell base from head. Build it with "
            "`tfdeploy.models.build_mobilenet`.")
    return None, [layer for layer in model.layers[:cut]
                  if not isinstance(layer, keras.layers.InputLayer)]


class FineTune(keras.callbacks.Callback):
    """Unfreeze the top of the base at epoch ``at_epoch`` and lower the learning rate.

    Args:
        at_epoch: the (0-based) epoch at whose start the base is unfrozen.
            Defaults to 1.
        unfreeze: how many of the base's last layers to unfreeze (counting every
            layer, as ``base.layers[-unfreeze:]``); None unfreezes the whole base
            unless ``from_layer`` is given. Defaults to None.
        from_layer: unfreeze from this base layer (name; a wrapped layer is
            matched by its inner name) to the end of the base. Defaults to None.
        learning_rate: the learning rate from then on; None multiplies the
            current one by ``lr_factor``. Defaults to None.
        lr_factor: see ``learning_rate``. Defaults to 0.1.
        verbose: print what was unfrozen. Defaults to 0.

    After firing it sets ``logs["fine_tune/trainable_layers"]``,
    ``logs["fine_tune/trainable_params"]`` and ``logs["fine_tune/learning_rate"]``
    at every epoch end (0 trainable base layers before it fires), so
    ``TensorBoard``/``CSVLogger`` record them. ``self.unfrozen`` lists the names.

    Example:
        >>> model.fit(train, epochs=6, callbacks=[FineTune(at_epoch=3, unfreeze=30)])
    """

    def __init__(self, at_epoch=1, unfreeze=None, from_layer=None, learning_rate=None,
                 lr_factor=0.1, verbose=0):
        super().__init__()
        if unfreeze is not None and from_layer is not None:
            raise ModelTypeError("Give either unfreeze=N or from_layer=NAME, not both.")
        if unfreeze is not None and (not isinstance(unfreeze, int) or unfreeze < 1):
            raise ModelTypeError(f"unfreeze must be a positive layer count, received {unfreeze!r}.")
        if int(at_epoch) < 0:
            raise ModelTypeError(f"at_epoch must be >= 0, received {at_epoch!r}.")
        self.at_epoch, self.unfreeze, self.from_layer = int(at_epoch), unfreeze, from_layer
        self.learning_rate, self.lr_factor, self.verbose = learning_rate, lr_factor, verbose
        self.unfrozen = []

    def __deepcopy__(self, memo):
        return type(self)(self.at_epoch, self.unfreeze, self.from_layer,
                          copy.deepcopy(self.learning_rate, memo), self.lr_factor, self.verbose)

    def on_train_begin(self, logs=None):
        self.unfrozen = []

    def _targets(self):
        _, layers = base_layers(self.model)
        if self.from_layer is not None:
            names = [_inner(layer).name for layer in layers]
            alt = [layer.name for layer in layers]
            if self.from_layer in names:
                return layers[names.index(self.from_layer):]
            if self.from_layer in alt:
                return layers[alt.index(self.from_layer):]
            raise ModelTypeError(
                f"from_layer={self.from_layer!r} is not a layer of the base of "
                f"{self.model.name!r}; base layers end with {names[-5:]}.")
        return layers if self.unfreeze is None else layers[-self.unfreeze:]

    def _new_optimizer(self):
        old = self.model.optimizer
        if self.learning_rate is not None:
            lr = self.learning_rate
        else:
            current = old.learning_rate
            if isinstance(current, keras.optimizers.schedules.LearningRateSchedule):
                lr = float(current(old.iterations)) * self.lr_factor
            else:
                lr = float(keras.backend.get_value(current)) * self.lr_factor
        config = old.get_config()
        config["learning_rate"] = lr
        new = type(old).from_config(config)
        new.iterations.assign(old.iterations)
        return new

    def on_epoch_begin(self, epoch, logs=None):
        if epoch != self.at_epoch or self.unfrozen:
            return
        base, _ = base_layers(self.model)
        targets = self._targets()
        if base is not None and not base.trainable:
            # A frozen nested model hides all its weights: open it, then re-freeze the rest.
            keep = {id(layer) for layer in targets}
            base.trainable = True
            for layer in base.layers:
                if id(layer) not in keep:
                    layer.trainable = False
        for layer in targets:
            if isinstance(_inner(layer), keras.layers.BatchNormalization):
                layer.trainable = False
            else:
                layer.trainable = True
        self.unfrozen = [layer.name for layer in targets if layer.trainable and layer.weights]
        self.model.optimizer = self._new_optimizer()
        # the new optimizer's slots now, not in the new train step's first trace (a second)
        build_optimizer_state(self.model)
        self.model.train_function = None
        self.model.make_train_function(force=True)
        if self.verbose:
            print(f"FineTune: epoch {epoch}: unfroze {len(self.unfrozen)} base layers, "
                  f"learning rate {self._lr():.3g}")

    def _lr(self):
        lr = self.model.optimizer.learning_rate
        if isinstance(lr, keras.optimizers.schedules.LearningRateSchedule):
            lr = lr(self.model.optimizer.iterations)
        return float(keras.backend.get_value(lr))

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        logs["fine_tune/trainable_layers"] = float(len(self.unfrozen))
        logs["fine_tune/trainable_params"] = float(sum(
            int(w.shape.num_elements()) for w in self.model.trainable_weights))
        logs["fine_tune/learning_rate"] = self._lr()
