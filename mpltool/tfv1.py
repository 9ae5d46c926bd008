"""The one import of TensorFlow: graph-mode tf.compat.v1 with TF's start-up chatter silenced."""

import os
import warnings

# 3: not even TF's C++ ERROR lines; mpltool turns every failure into its own one-line error instead.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import tensorflow as _tf  # noqa: E402

from mpltool.signals import check_interrupted  # noqa: E402

check_interrupted()  # TF's start-up swallows a KeyboardInterrupt raised inside it: honour the signal now

tf = _tf.compat.v1
tf.disable_v2_behavior() if hasattr(tf, "disable_v2_behavior") and _tf.__version__.startswith("2") else None
tf.logging.set_verbosity(tf.logging.FATAL)  # no raw `ERROR:tensorflow:` lines reach the user

__all__ = ["tf"]
