"""Pure tensor code: colour, resize, the evaluation protocol, metrics, tiling."""
