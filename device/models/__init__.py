"""Models of a verified bundle: the signed bundle reader, inference backends (ONNX Runtime,
TensorRT), the segmenter interface and the classifiers."""
