"""Measuring quality: PSNR/SSIM of files, and benchmarks on test sets.

One concern a module: :mod:`~sruc.measure.quality` (two images compared),
:mod:`~sruc.measure.sets` (folders of ground truth, checked and read),
:mod:`~sruc.measure.bench` (models resolved for every scale and run) and
:mod:`~sruc.measure.report` (the results and their JSON).
"""
