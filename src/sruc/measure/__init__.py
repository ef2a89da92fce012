"""Measuring quality: PSNR/SSIM of files, and benchmarks on test sets."""
