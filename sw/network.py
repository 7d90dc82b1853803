"""Network description: the layers the toolkit understands, their shapes, and their JSON form.

A network is an input shape (H, W, C) in NHWC layout and an ordered list of layers. Parameters live beside it in a
dict keyed ``"<layer>.weight"`` / ``"<layer>.bias"``:

* Conv2D weight: (kernel_h, kernel_w, in_channels, filters) - HWIO; bias: (filters,)
* Dense weight: (in_features, units); bias: (units,). A Dense after Flatten sees the NHWC-flattened input.

ReLU is a flag on the layer before it (``relu=True``): the hardware fuses it into the epilogue clamp.
Softmax/argmax run on the host and are not layers here.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

__all__ = ["Conv2D", "MaxPool2D", "Dense", "Flatten", "Network", "NetworkError", "mnist_cnn"]


class NetworkError(ValueError):
    """A network description that is malformed or inconsistent (the message names the layer and the cause)."""


def _positive_pair(name, what, value):
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
        raise NetworkError(f"Layer {name!r}: {what} must be a positive integer or a pair of them, not {value!r}")
    return value


@dataclass(frozen=True)
class Conv2D:
    name: str
    filters: int
    kernel: tuple[int, int] = (3, 3)
    stride: tuple[int, int] = (1, 1)
    padding: str = "valid"
    relu: bool = False
    kind: str = field(default="conv2d", init=False)

    def __post_init__(self):
        object.__setattr__(self, "kernel", _positive_pair(self.name, "kernel", self.kernel))
        object.__setattr__(self, "stride", _positive_pair(self.name, "stride", self.stride))
        if not isinstance(self.filters, int) or self.filters <= 0:
            raise NetworkError(f"Layer {self.name!r}: filters must be a positive integer, not {self.filters!r}")
        if self.padding not in ("valid", "same"):
            raise NetworkError(f"Layer {self.name!r}: padding must be 'valid' or 'same', not {self.padding!r}")

    def padding_amounts(self, in_h: int, in_w: int) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) padding, TensorFlow's convention for 'same' (extra pad at the end)."""
        if self.padding == "valid":
            return (0, 0, 0, 0)
        pads = []
        for size, k, s in ((in_h, self.kernel[0], self.stride[0]), (in_w, self.kernel[1], self.stride[1])):
            out = -(-size // s)
            total = max((out - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return tuple(pads)

    def output_shape(self, shape):
        if len(shape) != 3:
            raise NetworkError(f"Layer {self.name!r}: Conv2D needs an (H, W, C) input, got {tuple(shape)}")
        h, w, _ = shape
        if self.padding == "same":
            return (-(-h // self.stride[0]), -(-w // self.stride[1]), self.filters)
        oh = (h - self.kernel[0]) // self.stride[0] + 1
        ow = (w - self.kernel[1]) // self.stride[1] + 1
        if h < self.kernel[0] or w < self.kernel[1]:
            raise NetworkError(f"Layer {self.name!r}: kernel {self.kernel} is larger than its input {h}x{w}")
        return (oh, ow, self.filters)

    def param_shapes(self, shape):
        return {"weight": (*self.kernel, shape[2], self.filters), "bias": (self.filters,)}


@dataclass(frozen=True)
class MaxPool2D:
    name: str
    pool: tuple[int, int] = (2, 2)
    stride: tuple[int, int] | None = None
    kind: str = field(default="maxpool2d", init=False)

    def __post_init__(self):
        object.__setattr__(self, "pool", _positive_pair(self.name, "pool", self.pool))
        stride = self.pool if self.stride is None else self.stride
        object.__setattr__(self, "stride", _positive_pair(self.name, "stride", stride))

    def output_shape(self, shape):
        if len(shape) != 3:
            raise NetworkError(f"Layer {self.name!r}: MaxPool2D needs an (H, W, C) input, got {tuple(shape)}")
        h, w, c = shape
        if h < self.pool[0] or w < self.pool[1]:
            raise NetworkError(f"Layer {self.name!r}: pool {self.pool} is larger than its input {h}x{w}")
        return ((h - self.pool[0]) // self.stride[0] + 1, (w - self.pool[1]) // self.stride[1] + 1, c)

    def param_shapes(self, shape):
        return {}


@dataclass(frozen=True)
class Flatten:
    name: str
    kind: str = field(default="flatten", init=False)

    def output_shape(self, shape):
        n = 1
        for d in shape:
            n *= d
        return (n,)

    def param_shapes(self, shape):
        return {}


@dataclass(frozen=True)
class Dense:
    name: str
    units: int
    relu: bool = False
    kind: str = field(default="dense", init=False)

    def __post_init__(self):
        if not isinstance(self.units, int) or self.units <= 0:
            raise NetworkError(f"Layer {self.name!r}: units must be a positive integer, not {self.units!r}")

    def output_shape(self, shape):
        if len(shape) != 1:
            raise NetworkError(f"Layer {self.name!r}: Dense needs a flat input (add a Flatten), got {tuple(shape)}")
        return (self.units,)

    def param_shapes(self, shape):
        return {"weight": (shape[0], self.units), "bias": (self.units,)}


_KINDS = {cls.__dataclass_fields__["kind"].default: cls for cls in (Conv2D, MaxPool2D, Flatten, Dense)}


@dataclass(frozen=True)
class Network:
    """An input shape and a list of layers; validates names and shapes on construction."""

    input_shape: tuple[int, ...]
    layers: tuple

    def __post_init__(self):
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise NetworkError("A network needs at least one layer")
        names = [layer.name for layer in self.layers]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise NetworkError(f"Layer names must be unique; repeated: {sorted(dup)}")
        self.shapes()  # raises on inconsistent shapes

    def shapes(self) -> list[tuple[int, ...]]:
        """The activation shape after each layer (index 0 is the input)."""
        shapes = [self.input_shape]
        for layer in self.layers:
            shapes.append(tuple(layer.output_shape(shapes[-1])))
        return shapes

    @property
    def output_shape(self):
        return self.shapes()[-1]

    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        out = {}
        for layer, shape in zip(self.layers, self.shapes()):
            for key, s in layer.param_shapes(shape).items():
                out[f"{layer.name}.{key}"] = tuple(s)
        return out

    def macs(self) -> dict[str, int]:
        """Multiply-accumulates per image for each Conv2D/Dense layer."""
        out = {}
        for layer, shape_in, shape_out in zip(self.layers, self.shapes(), self.shapes()[1:]):
            if isinstance(layer, Conv2D):
                out[layer.name] = shape_out[0] * shape_out[1] * shape_out[2] * layer.kernel[0] * layer.kernel[1] * shape_in[2]
            elif isinstance(layer, Dense):
                out[layer.name] = shape_in[0] * layer.units
        return out

    def to_json(self) -> dict:
        return {"input_shape": list(self.input_shape),
                "layers": [{k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(layer).items()}
                           for layer in self.layers]}

    @classmethod
    def from_json(cls, obj) -> "Network":
        try:
            layers = []
            for i, spec in enumerate(obj["layers"]):
                spec = dict(spec)
                kind = spec.pop("kind", None)
                if kind not in _KINDS:
                    raise NetworkError(f"Layer {i} ({spec.get('name', '?')!r}): unsupported layer kind {kind!r}; "
                                       f"supported: {sorted(_KINDS)}")
                try:
                    layers.append(_KINDS[kind](**spec))
                except TypeError as exc:
                    raise NetworkError(f"Layer {i} ({spec.get('name', '?')!r}): bad fields for {kind}: {exc}") from None
            return cls(tuple(obj["input_shape"]), tuple(layers))
        except (KeyError, TypeError) as exc:
            raise NetworkError(f"Malformed network description: missing or bad field {exc}") from None

    def dumps(self) -> str:
        return json.dumps(self.to_json())


def mnist_cnn() -> Network:
    """The reference MNIST CNN: conv 32@3x3 + ReLU, pool, conv 64@3x3 + ReLU, pool, flatten, dense 512 + ReLU, dense 10."""
    return Network((28, 28, 1), (
        Conv2D("conv1", 32, (3, 3), relu=True),
        MaxPool2D("pool1", (2, 2)),
        Conv2D("conv2", 64, (3, 3), relu=True),
        MaxPool2D("pool2", (2, 2)),
        Flatten("flatten"),
        Dense("dense1", 512, relu=True),
        Dense("dense2", 10),
    ))
