"""realsr's int8 models: `<stem>.int8.onnx` beside the fp32 `<stem>.onnx`, and the one recipe that makes them
(`realsr quantize`, and `realsr bench`'s int8 reference convolution).

ONNX Runtime's static quantization: QDQ, weights per output channel, unsigned activations whose ranges are the
99.999th percentile of their magnitudes on the calibration inputs. Percentile ranges clip the rare extreme
activations that min/max ranges would spend the 256 levels on; of min/max, entropy and percentile ranges, and of
signed symmetric activations, it kept the bundled model closest to fp32 (models/README.md). No torch here.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path

import numpy as np

INT8_SUFFIX = ".int8.onnx"
PERCENTILE = 99.999  # of each activation's magnitudes: the range the 256 levels cover


def quantize_int8(source: Path, dest: Path, calibration: list[dict[str, np.ndarray]]) -> None:
    """The fp32 ONNX model `source` quantized to int8 into `dest` by the recipe above, its activation ranges from
    the `calibration` inputs (each {input name: array})."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inputs = iter(calibration)

    class Reader:  # onnxruntime's CalibrationDataReader protocol
        def get_next(self):
            return next(inputs, None)

    with tempfile.TemporaryDirectory(prefix="realsr-quantize-") as tmp, _quiet():
        prepared = Path(tmp) / "prepared.onnx"
        # shapes inferred and constants folded first, as ONNX Runtime's quantizer asks
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(dest),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": PERCENTILE},
        )


@contextlib.contextmanager
def _quiet():
    """ONNX Runtime's quantizer prints its progress and logs advice: the command reports what matters itself."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
