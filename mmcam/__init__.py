"""mmcam: Grad-CAM explanations for vision and vision-language models."""
