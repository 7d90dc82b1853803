"""The model a subcommand works on, whatever file it came from, with the operations the apps need.

:func:`open_model` reads a model file and returns a :class:`Model`: its input (shape per sample and the dtypes
it takes), a :class:`~sw.driver.Driver` for any backend, its float twin where one is paired with it, and its own
runtime's reference for ``--compare-reference``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .cli import CliError

__all__ = ["Model", "open_model", "SUFFIXES"]

SUFFIXES = (".npz", ".tflite", ".onnx")


class Model:
    """A loaded model. ``net`` is what the driver runs; ``float_model`` the paired ``(network, params)`` or None."""

    def __init__(self, path: Path, kind: str, net, *, input_shape, input_dtypes, float_model=None,
                 float_path=None):
        self.path, self.kind, self.net = Path(path), kind, net
        self.input_shape = tuple(input_shape)
        self.input_dtypes = tuple(np.dtype(d) for d in input_dtypes)
        self.float_model, self.float_path = float_model, float_path
        self.calibration = None

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def random_dtype(self) -> np.dtype:
        """The dtype of ``--random`` inputs: the model's own integer input type."""
        return self.input_dtypes[0]

    def fit(self, x, source: str) -> np.ndarray:
        """A batch of data as this model takes it, checked (:func:`sw.datasets.fit_inputs`). An ONNX model also
        takes floats in its own layout (NCHW), converted as its QuantizeLinear would."""
        from sw.datasets import fit_inputs
        x = np.asarray(x)
        meta = (self.net.metadata.get("onnx", {}).get("inputs") if self.kind == "onnx" else None) or []
        if (len(meta) == 1 and meta[0].get("layout") == "NCHW" and x.shape[1:] == tuple(meta[0]["shape"][1:])
                and tuple(meta[0]["shape"][1:]) != self.input_shape and np.issubdtype(x.dtype, np.floating)):
            from sw.frontends.onnx import to_graph_inputs
            x = to_graph_inputs(self.net, x)[0]
        return fit_inputs(x, self.input_shape, self.input_dtypes, source)

    def _int8(self, x) -> np.ndarray:
        """The int8 model input of ``x`` (floats quantized with the input tensor's scale and zero point)."""
        x = np.asarray(x)
        return x if x.dtype == np.int8 else self.graph.input.quant.quantize(x)

    def driver(self, backend, config, *, batch_size=32, workers=None):
        from sw.driver import Driver
        return Driver(self.net, backend=backend, config=config, batch_size=batch_size, workers=workers)

    def float_logits(self, x) -> np.ndarray | None:
        if self.float_model is None:
            return None
        from sw.reference import float_forward
        network, params = self.float_model
        x = np.asarray(x)
        if x.dtype == np.uint8:
            from sw.reference import images_to_float
            x = images_to_float(x)
        return float_forward(network, params, x)

    @property
    def graph(self):
        """The model as the graph IR (the driver runs every model as its graph)."""
        from sw.ir import Graph
        return self.net if isinstance(self.net, Graph) else Graph.from_quantized_network(self.net)

    def describe(self, config, batch: int = 1) -> list[dict]:
        """One record per layer: name, op, input/output shape, quantization, where it runs, MACs and predicted
        cycles per input (the exact cycle model for ``config`` at ``batch`` inputs a run)."""
        from sw.compiler import compile_graph
        graph = self.graph
        compiled = compile_graph(graph, config)
        predicted = compiled.predicted_cycles(batch)
        rows = []
        for step in compiled.steps:
            node = step.node
            ins = graph.input_tensors(node)
            out = graph.output_tensor(node)
            quant = {"input": [(float(t.quant.scale), int(t.quant.zero_point)) for t in ins],
                     "output": (float(out.quant.scale), int(out.quant.zero_point))}
            if getattr(node, "weight", None) is not None:
                ws = np.atleast_1d(node.weight_scale)
                quant["weights"] = f"int8 per {'channel' if ws.size > 1 else 'tensor'} ({ws.size})"
            if hasattr(node, "act_min"):
                quant["clamp"] = (int(node.act_min), int(node.act_max))
            cycles = predicted.get(step.name)
            rows.append({"name": step.name, "op": step.kind, "input_shape": tuple(step.input_shape),
                         "output_shape": tuple(step.output_shape), "quant": quant, "target": step.target,
                         "raw": bool(getattr(step, "raw", False)), "macs": step.macs(1),
                         "cycles": None if cycles is None else cycles / batch})
        return rows

    def check_reference(self) -> None:
        """Raise unless :meth:`reference` can run (called before a run, so the error comes first)."""
        if self.kind == "npz":
            self.reference(None)
        self._reference_runner()

    def _reference_runner(self):
        """``reference_run(path, int8 inputs) -> int8 outputs`` of the frontend for this model's kind."""
        import importlib
        module_name = f"sw.frontends.{self.kind}"
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                raise CliError(f"{self.path}: --compare-reference needs the {self.kind} frontend ({module_name}), "
                               f"which this checkout lacks") from None
            raise
        runner = getattr(module, "reference_run", None)
        if runner is None:
            raise CliError(f"{self.path}: the {self.kind} frontend has no reference_run yet: drop "
                           f"--compare-reference")
        return runner

    def reference(self, x):
        """(runtime name, outputs) of the model's own runtime, for ``--compare-reference``."""
        if self.kind != "npz":
            runtime = {"tflite": "LiteRT (BUILTIN_REF kernels)", "onnx": "onnxruntime"}[self.kind]
            extra = {} if self.calibration is None else {"calibration": self.calibration}
            return runtime, self._reference_runner()(self.path, self._int8(x), **extra)
        raise CliError(f"{self.path}: a toolkit .npz model has no other runtime than the toolkit's own; its reference "
                       f"is the CPU int8 path, which every run compares with (drop --compare-reference)")


def _open_npz(path: Path, float_path):
    from sw.model_io import ModelFileError, check_pair, load_float, load_quantized
    try:
        qnet = load_quantized(path)
    except ModelFileError as exc:
        try:                    # a valid float model where the int8 one belongs?
            load_float(path)
        except ModelFileError:
            raise exc from None
        raise CliError(f"{path}: is a float model; the accelerator runs int8 models: "
                       f"systolic8 quantize {path} --data DATA --out MODEL_int8.npz") from None
    float_model = None
    if float_path is not None:
        float_model = load_float(float_path)
        check_pair(float_path, qnet, path, float_model=float_model)
    elif qnet.float_digest is not None:
        # The float model beside it, if its name says so and its digest agrees.
        twin = path.with_name(path.name.replace("_int8", "_float")) if "_int8" in path.name else None
        if twin is not None and twin.is_file():
            candidate = load_float(twin)
            from sw.quantize import float_digest
            if float_digest(*candidate) == qnet.float_digest:
                float_model, float_path = candidate, twin
    shape = qnet.network.input_shape
    return Model(path, "npz", qnet, input_shape=shape, input_dtypes=(np.uint8, np.float32, np.float64),
                 float_model=float_model, float_path=float_path)


def load_calibration(data, n: int = 500) -> np.ndarray:
    """Calibration inputs for a float ONNX model: the first ``n`` samples of ``data`` (any format
    :func:`sw.datasets.load_data` reads), as float32 in the model's own layout."""
    from sw.datasets import load_data
    from .options import check_count
    dataset = load_data(data)
    count = min(check_count("--calibration-n", n, None, "calibration inputs"), len(dataset))
    x = dataset.x[:count]
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise CliError(f"{dataset.source}: calibration inputs must be numbers, not {x.dtype}")
    return x.astype(np.float32)


def open_model(path, *, float_path=None, calibration=None) -> Model:
    """Load ``path`` (.npz int8 model of the toolkit, .tflite, .onnx); ``float_path`` is its paired float model,
    ``calibration`` the sample inputs (float32, the model's layout) a float ONNX model is quantized with."""
    path = Path(path)
    if not path.exists():
        raise CliError(f"{path}: no such model file; check the path (models/mnist_int8.npz ships with the toolkit)")
    if path.is_dir():
        raise CliError(f"{path}: is a folder; pass a model file ({', '.join(SUFFIXES)})")
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return _open_npz(path, float_path)
    if float_path is not None:
        raise CliError(f"--float-model pairs a toolkit .npz int8 model with its float model; {path} is a "
                       f"{suffix} model: drop --float-model")
    if calibration is not None and suffix != ".onnx":
        raise CliError(f"--calibration quantizes a float ONNX model; {path} is already an int8 {suffix} model: "
                       f"drop --calibration")
    if suffix in (".tflite", ".onnx"):
        try:
            from sw.frontends import load_model
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("sw.frontends"):
                raise CliError(f"{path}: {suffix} models need the model importers (sw/frontends), which are not "
                               f"part of this checkout") from None
            raise
        graph = load_model(path) if calibration is None else load_model(path, calibration=calibration)
        model = Model(path, suffix[1:], graph, input_shape=graph.input.shape,
                      input_dtypes=(np.int8, np.float32, np.float64))
        model.calibration = calibration
        return model
    raise CliError(f"{path}: unknown model type {suffix or '(no suffix)'!r}; pass one of {', '.join(SUFFIXES)}")
