"""Learning rates, the UDA weight ramp and the EMA decay as graph functions of the global step.

They follow the reference's `common_utils.get_learning_rate` (docs/mpl-reference.md §3): linear warmup
`base * (t + 1) / warmup` (the reference's formula; the Ascend port used `t / warmup`), then cosine decay
from `base` to 0 at the end of the run, clamped at 0 afterwards. (An algorithm with more schedules,
MPL's student, builds them from warmup_then_decay in its own module.)

Each function takes the global step (any integer or float tensor) and returns a float32 scalar tensor.
They are `tf.where`s, not `tf.cond`s, so the graph has no Switch/Merge and every branch is cheap.
"""

import math

from mpltool.tfv1 import tf


def replica_scale(recipe) -> float:
    """`lr_scaling: linear` multiplies every base rate by the number of data-parallel replicas."""
    return float(recipe.replicas) if recipe.lr_scaling == "linear" else 1.0


def base_learning_rate(learning_rate, recipe):
    """The recipe's rate, times B/256 when the recipe asks for the reference's batch scaling, times the
    replicas under linear scaling."""
    scale = recipe.batch_size / 256.0 if recipe.lr_scale_by_batch else 1.0
    return float(learning_rate) * scale * replica_scale(recipe)


def warmup_then_decay(step, base, warmup_steps, decay_steps, decay):
    """`base*(t+1)/warmup` for t < warmup, then cosine over `decay_steps` (or constant); t may be < 0."""
    t = tf.cast(step, tf.float32)
    base = tf.constant(base, tf.float32)
    if decay == "cosine":
        # A run shorter than its warmup never reaches the decay; flooring at 1 keeps the graph finite.
        decay_steps = float(max(decay_steps, 1))
        remaining = tf.clip_by_value((decay_steps - (t - warmup_steps)) / decay_steps, 0.0, 1.0)
        # 0.5·(1 + cos(π·p)) with p = 1 − remaining, written as sin²(π·remaining/2): equal, but float32
        # keeps its precision near the end (1 + cos(π·p) cancels: 0.3% off at N − 1 for N = 1000) and
        # the rate is exactly 0 from step N on.
        decayed = base * tf.square(tf.sin(0.5 * math.pi * remaining))
    elif decay == "constant":
        decayed = base
    else:
        raise ValueError("unknown lr_decay {!r}".format(decay))
    if warmup_steps <= 0:
        return decayed
    warmup = base * (t + 1.0) / float(warmup_steps)
    return tf.where(t < warmup_steps, warmup, decayed)


def learning_rate(global_step, recipe, name="learning_rate"):
    """The recipe's `lr` with its warmup, then its decay to step N."""
    return tf.identity(warmup_then_decay(
        global_step, base_learning_rate(recipe.lr, recipe), recipe.lr_warmup_steps,
        recipe.num_train_steps - recipe.lr_warmup_steps, recipe.lr_decay), name=name)


def ema_decay(global_step, recipe):
    """`min(decay, (t+1)/(t+10))`: early EMAs follow the student closely instead of its random init."""
    t = tf.cast(global_step, tf.float32)
    return tf.minimum(float(recipe.ema_decay), (t + 1.0) / (t + 10.0), name="ema_decay")
