"""The training run of the unit tests: the tiny presets' CPU recipe cut down to a few seconds."""

from pem.train.config import TINY_RECIPE

# A run small enough for unit tests: 64x128 images, whole-image crops, few points, no warm-up.
TINY_RUN = TINY_RECIPE.replace(
    iterations=4,
    batch_size=2,
    lr=1e-3,
    warmup_iters=0,
    augment={
        "short_side": 64,
        "scale_range": (0.75, 1.0),
        "scale_step": 0.25,
        "max_size": 256,
        "crop_size": (64, 128),
    },
    loss={"num_points": 64},
    checkpoint_period=2,
    log_period=1,
)
