"""Torch-free deployment runtime: numpy, OpenCV and an inference engine only."""
