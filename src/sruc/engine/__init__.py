"""Running networks: devices, precision, fused kernels, prepared models, the pipeline."""
