"""A float copy of a QAT model (its trained weights, no fake-quant): what ONNX export and a
mixed-precision build from a QAT model convert."""

from tfdeploy._keras import keras
from tfdeploy import _tfmot


def float_twin(model):
    """A float copy of a QAT model: the wrapped layers with their trained weights."""
    def unwrap(layer):
        if _tfmot.is_quantize_wrapper(layer):
            inner = layer.layer
            config = inner.get_config()
            activation = _tfmot.quantize_activation_inner(getattr(inner, "activation", None))
            if activation is not None:
                config["activation"] = keras.activations.serialize(
                    keras.activations.get(activation))
            config["name"] = layer.name
            return inner.__class__.from_config(config)
        if _tfmot.is_quantize_layer(layer):
            return keras.layers.Activation("linear", name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    twin = keras.models.clone_model(model, clone_function=unwrap)
    for src, dst in zip(model.layers, twin.layers):
        if not dst.weights:
            continue
        if _tfmot.is_quantize_wrapper(src):
            # The wrapper owns the inner layer's variables (kernel, bias) next to its ranges.
            inner = _tfmot.quantize_wrapper_inner_weights(src)
            dst.set_weights([inner[w.name.split("/")[-1]].numpy() for w in dst.weights])
        else:
            dst.set_weights(src.get_weights())
    return twin
