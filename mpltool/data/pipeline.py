"""The tf.data input of a training step: the labelled view and, when the algorithm asks for them, the
unlabelled "ori" and "aug" views (docs/mpl-reference.md §1).

Images enter through placeholders fed once at iterator initialisation, so the GraphDef (and every
checkpoint's meta graph) stays small however large the data set is.
"""

import collections

import numpy as np

from mpltool.data import augment
from mpltool.tfv1 import tf

Batch = collections.namedtuple("Batch", ["labelled_images", "labels", "ori_images", "aug_images"])


POLICIES = ("randaugment", "autoaugment", "none")


def strong_view(image, policy, magnitude, num_layers, seed, overflow):
    """The strong view of one uint8 image under the recipe's `augment` policy:
    randaugment (RandAugment, cutout, flip/crop: the reference's aug view), autoaugment (the CIFAR-10
    policy, crop, flip, cutout 16: tensorflow/models' order), or none (flip/pad/crop only)."""
    if policy == "randaugment":
        return augment.aug_view(image, magnitude=magnitude, num_layers=num_layers, seed=seed, overflow=overflow)
    if policy == "autoaugment":
        return augment.autoaugment_view(image, seed=seed, overflow=overflow)
    if policy == "none":
        return augment.labelled_view(image, seed=seed)
    raise ValueError("augment must be one of {}, got {!r}".format(", ".join(POLICIES), policy))


class TrainInput:
    """Per step: B labelled images and, with uda_data > 0, U = uda_data·B unlabelled images as ori
    (flip/pad/crop) + aug (the strong view of `policy`). The labelled view is flip/pad/crop, or the strong
    view when the algorithm asks for it (`labelled_strong`: supervised training with a policy).
    uda_data = 0 builds no unlabelled stream (its ori/aug are None)."""

    def __init__(self, batch_size, uda_data, magnitude=16, num_layers=2, shuffle_buffer=1024,
                 seed=None, image_shape=(32, 32, 3), overflow="clip", policy="randaugment",
                 labelled_strong=False):
        self.batch_size = batch_size
        self.unlabelled_batch_size = batch_size * uda_data
        self.labelled_images = tf.placeholder(tf.uint8, (None,) + tuple(image_shape), name="labelled_images")
        self.labelled_labels = tf.placeholder(tf.int64, (None,), name="labelled_labels")
        self.unlabelled_images = tf.placeholder(tf.uint8, (None,) + tuple(image_shape), name="unlabelled_images")
        parallel = tf.data.experimental.AUTOTUNE

        # Distinct op seeds per stream: with only a graph-level seed, random ops inside different map
        # functions can receive the same seeds and draw correlated numbers.
        labelled_seed = None if seed is None else seed + 101
        unlabelled_seed = None if seed is None else seed + 202

        def labelled_map(image, label):
            if labelled_strong:
                view = strong_view(image, policy, magnitude, num_layers, labelled_seed, overflow)
            else:
                view = augment.labelled_view(image, seed=labelled_seed)
            return augment.normalize(view), label

        def unlabelled_map(image):
            if policy == "randaugment":  # the reference's pair: aug starts from this very ori image
                ori, aug = augment.unlabelled_views(image, magnitude=magnitude, num_layers=num_layers,
                                                    seed=unlabelled_seed, overflow=overflow)
            else:
                ori = augment.ori_view(image, seed=unlabelled_seed)
                aug = strong_view(ori, policy, magnitude, num_layers,
                                  None if unlabelled_seed is None else unlabelled_seed + 7, overflow)
            return augment.normalize(ori), augment.normalize(aug)

        # Shuffle after repeat, as the reference: epochs blur into one stream.
        labelled = (tf.data.Dataset.from_tensor_slices((self.labelled_images, self.labelled_labels))
                    .repeat().shuffle(shuffle_buffer, seed=seed)
                    .map(labelled_map, num_parallel_calls=parallel)
                    .batch(batch_size, drop_remainder=True))
        if self.unlabelled_batch_size:
            unlabelled = (tf.data.Dataset.from_tensor_slices(self.unlabelled_images)
                          .repeat().shuffle(shuffle_buffer, seed=None if seed is None else seed + 1)
                          .map(unlabelled_map, num_parallel_calls=parallel)
                          .batch(self.unlabelled_batch_size, drop_remainder=True))
            dataset = tf.data.Dataset.zip((labelled, unlabelled)).prefetch(2)
            self.iterator = tf.data.make_initializable_iterator(dataset)
            (l_images, l_labels), (ori, aug) = self.iterator.get_next()
        else:
            self.iterator = tf.data.make_initializable_iterator(labelled.prefetch(2))
            (l_images, l_labels), ori, aug = self.iterator.get_next(), None, None
        self.batch = Batch(l_images, l_labels, ori, aug)

    def initialize(self, session, images: np.ndarray, labels: np.ndarray, labelled_indices: np.ndarray) -> None:
        """Labelled = the recorded split; unlabelled = every training image (so it includes the labelled)."""
        feed = {self.labelled_images: images[labelled_indices],
                self.labelled_labels: labels[labelled_indices].astype(np.int64)}
        if self.unlabelled_batch_size:
            feed[self.unlabelled_images] = images
        session.run(self.iterator.initializer, feed_dict=feed)
