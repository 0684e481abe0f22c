"""edgereid: person re-identification ViTs from training to the edge.

Stages (one distribution, one subpackage each; docs/architecture.md has the map):

- ``edgereid.data``: data sets, the synthetic generator, shared file and flag helpers (numpy + Pillow)
- ``edgereid.runtime``: torch-free on-device library and ``reid-runtime`` (imports data)
- ``edgereid.calibration``: int8 calibration (imports data, runtime)
- ``edgereid.train``: torch/timm training, compression and pruning (imports data, runtime)
- ``edgereid.export``: ONNX/OpenVINO/TensorRT lowering and bundles (imports everything below)
"""

__version__ = "0.1.0"
