"""Export of a trained student: ONNX (fp32/fp16/int8 Q/DQ) and TensorRT engines, with metadata sidecars."""
