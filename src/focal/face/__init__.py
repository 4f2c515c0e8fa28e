"""The face wing: RetinaFace face detection, from the model's install to its evaluation.

    retinaface         pure pre- and post-processing (anchors, decode, NMS), the Session
                       protocol and RawOutputs; numpy only, no inference runtime
    sessions           the one module that chooses and imports a runtime (ONNX Runtime,
                       OpenVINO; torch lazily); DetectorConfig and open_detector
    detector           the CPU detector over a session; detection on image files
    torch_graph        the converted ONNX graph as a torch.nn.Module
    torch_postprocess  decode and NMS on the torch device
    torch_detector     the batching torch detector (GPUs)
    models             the model cache: download, convert (convert, graphdef), install, lookup
    batching           many threads' one-image calls batched for one detector
    evaluation         the WIDER FACE protocol and detector-against-detector comparison

The wing imports from the core only focal.detection (the Detector protocol), focal.geometry,
focal.errors and focal.files; nothing in the core imports the wing (tests/test_imports.py).
Importing this package imports nothing.
"""

# The version of the TensorFlow -> ONNX translation (focal.face.convert): part of an installed
# model's identity (focal.face.models checks it without importing the translator or onnx).
# Bump it whenever the translation's output changes.
CONVERTER_VERSION = "1"
