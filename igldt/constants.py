"""Values every layer shares, defined once (torch-free: the runtime imports them too)."""

# The ignore value of every mask once loaded: each dataset format is remapped to it, every loss and
# metric skips it.
IGNORE_INDEX = 255

# ImageNet statistics: the default input normalisation of a checkpoint that records none (timm's
# ResNet/WRN/Swin weights were trained with them; EfficientNet-Lite presets set 0.5/0.5 instead).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
