"""edgereid: person re-identification ViTs from training to the edge.

Stages (one distribution, one subpackage each):

- ``edgereid.runtime``: numpy-only foundation (metrics, int8 codec, gallery store, backends, CLI)
- ``edgereid.calibration``: int8 calibration (imports runtime)
- ``edgereid.train``: torch/timm training and compression (imports runtime)
- ``edgereid.export``: ONNX/OpenVINO/TensorRT lowering and bundles (imports train, calibration, runtime)
"""

__version__ = "0.1.0"
