"""The one import of TensorFlow: graph-mode tf.compat.v1 with TF's start-up chatter silenced."""

import os
import warnings

# 3: not even TF's C++ ERROR lines; mpltool turns every failure into its own one-line error instead.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
warnings.filterwarnings("ignore", category=FutureWarning)
warnings.filterwarnings("ignore", category=DeprecationWarning)

from mpltool.signals import check_interrupted, critical_section  # noqa: E402

# A KeyboardInterrupt raised while TF's native module initialises can crash the process (SIGSEGV, seen
# about once in ten SIGTERMs there): the signals are held back during the import and delivered after it.
with critical_section():
    import tensorflow as _tf  # noqa: E402

check_interrupted()  # a signal that still reached TF's start-up was swallowed there: honour it now

tf = _tf.compat.v1
tf.disable_v2_behavior() if hasattr(tf, "disable_v2_behavior") and _tf.__version__.startswith("2") else None
tf.logging.set_verbosity(tf.logging.FATAL)  # no raw `ERROR:tensorflow:` lines reach the user

__all__ = ["tf"]
