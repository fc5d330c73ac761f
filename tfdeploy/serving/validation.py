"""Every request's input tensors checked against the signature before any runtime sees them.

A model given a tensor of the wrong rank may not fail cleanly: with TensorFlow's oneDNN
kernels on (the default on AVX-512 CPUs, forced by ``TF_ENABLE_ONEDNN_OPTS=1``) a
convolution fed a rank-1 tensor fails a CHECK and aborts the whole process. So names,
dtypes, ranks and every static dimension are checked here, for every method and front end
(REST and gRPC predict, classify, regress, MultiInference), and a bad request is an
INVALID_ARGUMENT naming the input, what the signature expects and what was received.

Strictness follows what the signature means:
- a **TF2 SavedModel** (``tf.saved_model.save``: Keras and tfdeploy exports) runs functions
  traced for exactly the signature's shapes, so the rank and every known dimension must
  match (only ``-1`` dimensions are free);
- a **TF1 graph** (``SavedModelBuilder``) is run by TF Serving through ``Session::Run``,
  which feeds any shape: TF Serving's own tests send ``[1.0, 2.0]`` to an input declared
  ``[-1, 1]`` and expect an answer. For those, names and dtypes are checked and shapes are
  the graph's (``SignatureValidator.strict_shapes`` is False); an input of unknown rank
  likewise. Such a signature is :attr:`SignatureValidator.fully_checked` = False, and the
  repository runs a model holding one in a separate worker process when its graph holds a
  kernel that can abort on a wrong rank (``--model_isolation auto``).
"""

import numpy as np

from tfdeploy.serving.status import invalid

# DataType enum -> (numpy dtype, TF name) of every dtype a request tensor can carry.
_DTYPES = {1: (np.float32, "float32"), 2: (np.float64, "float64"), 3: (np.int32, "int32"),
           4: (np.uint8, "uint8"), 5: (np.int16, "int16"), 6: (np.int8, "int8"),
           7: (object, "string"), 9: (np.int64, "int64"), 10: (np.bool_, "bool"),
           17: (np.uint16, "uint16"), 19: (np.float16, "float16"), 22: (np.uint32, "uint32"),
           23: (np.uint64, "uint64")}


def shape_text(shape):
    """``[-1,32,32,1]``-style text of a shape (None or -1 dims print as -1)."""
    if shape is None:
        return "<unknown rank>"
    return "[" + ",".join("-1" if d is None or d < 0 else str(d) for d in shape) + "]"


class TensorSpec:
    """One signature input: ``name``, ``dtype`` (TF name), ``numpy`` dtype, ``shape`` (None
    for an unknown rank; -1 for an unknown dimension)."""

    __slots__ = ("name", "dtype", "numpy", "shape", "enum")

    def __init__(self, name, tensor_info):
        self.name, self.enum = name, tensor_info.dtype
        numpy, self.dtype = _DTYPES.get(tensor_info.dtype, (None, None))
        self.numpy = None if numpy is None else np.dtype(numpy)
        if self.dtype is None:
            import tensorflow as tf   # (complex, resource, ...: named for the error message)

            try:
                self.dtype = tf.dtypes.as_dtype(tensor_info.dtype).name
            except TypeError:
                self.dtype = f"DataType({tensor_info.dtype})"
        shape = tensor_info.tensor_shape
        self.shape = None if shape.unknown_rank else tuple(int(d.size) for d in shape.dim)

    def describe(self):
        return f"shape {shape_text(self.shape)} and dtype {self.dtype}"


class SignatureValidator:
    """Checks request inputs against one SignatureDef.

    Args:
        signature_def: the ``SignatureDef`` proto.
        strict_shapes: check ranks and static dimensions (True for TF2 SavedModels).
    """

    def __init__(self, signature_def, strict_shapes=True):
        self.specs = {k: TensorSpec(k, v) for k, v in signature_def.inputs.items()}
        self.strict_shapes = strict_shapes
        self.fully_checked = strict_shapes and all(
            s.shape is not None for s in self.specs.values())

    def check_names(self, sent):
        expected, sent = set(self.specs), set(sent)
        if expected != sent:
            raise invalid(
                f"input size does not match signature: {len(sent)}!={len(expected)} "
                f"len({{{','.join(sorted(sent))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(sent - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - sent))}}}.")

    def check_shape(self, name, shape):
        """Raise INVALID_ARGUMENT when ``shape`` cannot feed input ``name`` (call it as early
        as a shape is known, before a tensor is materialised)."""
        spec = self.specs.get(name)
        if spec is None or not self.strict_shapes or spec.shape is None:
            return
        shape = tuple(int(d) for d in shape)
        if len(shape) != len(spec.shape):
            raise invalid(
                f"Input '{name}' expects {spec.describe()} (rank {len(spec.shape)}), received "
                f"shape {shape_text(shape)} (rank {len(shape)}). Send a tensor of rank "
                f"{len(spec.shape)}; -1 marks a dimension of any size (see the model's "
                "signature in its metadata).")
        for i, (want, got) in enumerate(zip(spec.shape, shape)):
            if want >= 0 and want != got:
                raise invalid(
                    f"Input '{name}' expects {spec.describe()}, received shape "
                    f"{shape_text(shape)}: dimension {i} must be {want}, not {got} (-1 marks "
                    "a dimension of any size; see the model's signature in its metadata).")

    def check(self, inputs):
        """Check ``{name: array}``; return ``{name: ndarray}`` ready to feed (strings as
        object arrays). Raises INVALID_ARGUMENT naming the input, expected and received."""
        self.check_names(inputs)
        feeds = {}
        for name, spec in self.specs.items():
            array = np.asarray(inputs[name])
            if spec.numpy is None:
                raise invalid(f"Input '{name}' has dtype {spec.dtype}, which requests cannot "
                              "carry; serve a signature with numeric, bool or string inputs.")
            if spec.numpy.kind == "O":
                if array.dtype.kind not in "OSU":
                    raise invalid(f"Expects arg '{name}' to be string but {dtype_name(array)} is "
                                  "provided")
                array = array.astype(object)
            elif array.dtype != spec.numpy:
                # TF Serving does not convert: a client must send the signature's dtype.
                raise invalid(f"Expects arg '{name}' to be {spec.dtype} but {dtype_name(array)} is "
                              "provided")
            self.check_shape(name, array.shape)
            feeds[name] = array
        return feeds


def dtype_name(value):
    """TF's name of a value's dtype as error messages say it ("string" for any text)."""
    dtype = np.asarray(value).dtype
    return "string" if dtype.kind in "OSU" else dtype.name
