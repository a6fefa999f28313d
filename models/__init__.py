"""DeepLabV3+ segmenters over timm backbones, and builders for the three IGL-DT roles."""
