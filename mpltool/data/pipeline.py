"""The tf.data input of a training step: the labelled view and, when the algorithm asks for them, the
unlabelled "ori" and "aug" views (docs/mpl-reference.md §1).

Images enter through placeholders fed once at iterator initialisation, so the GraphDef (and every
checkpoint's meta graph) stays small however large the data set is.
"""

import collections
from typing import Optional

import numpy as np

from mpltool.data import augment
from mpltool.tfv1 import tf

Batch = collections.namedtuple("Batch", ["labelled_images", "labels", "ori_images", "aug_images", "unlabelled_views"])
Batch.__new__.__defaults__ = (None,)


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
    """Per step: B labelled images and, with unlabelled_ratio > 0, U = unlabelled_ratio·B unlabelled images,
    either as ori (flip/pad/crop) + aug (the strong view of `policy`) or, with weak_views = K > 0, as K
    weak views (flip, reflect-pad crop: MixMatch's). The labelled view is flip/pad/crop (the weak view
    with weak_views), or the strong view when the algorithm asks for it (`labelled_strong`: supervised
    training with a policy). unlabelled_ratio = 0 builds no unlabelled stream (its fields are None).

    `normalize` maps uint8 views to the network's input (its input spec), so every model sees in training
    exactly what its exported graph computes from raw pixels."""

    def __init__(self, batch_size, unlabelled_ratio, magnitude=16, num_layers=2, shuffle_buffer=1024,
                 seed=None, image_shape=(32, 32, 3), overflow="clip", policy="randaugment",
                 labelled_strong=False, weak_views=0, normalize=augment.normalize):
        self.batch_size = batch_size
        self.unlabelled_batch_size = batch_size * unlabelled_ratio
        self.labelled_images = tf.placeholder(tf.uint8, (None,) + tuple(image_shape), name="labelled_images")
        self.labelled_labels = tf.placeholder(tf.int64, (None,), name="labelled_labels")
        self.unlabelled_images = tf.placeholder(tf.uint8, (None,) + tuple(image_shape), name="unlabelled_images")
        parallel = tf.data.experimental.AUTOTUNE

        # Distinct op seeds per stream: with only a graph-level seed, random ops inside different map
        # functions can receive the same seeds and draw correlated numbers.
        labelled_seed = augment.derived_seed(seed, 101)
        unlabelled_seed = augment.derived_seed(seed, 202)

        def labelled_map(image, label):
            if labelled_strong:
                view = strong_view(image, policy, magnitude, num_layers, labelled_seed, overflow)
            elif weak_views:
                view = augment.weak_view(image, seed=labelled_seed)
            else:
                view = augment.labelled_view(image, seed=labelled_seed)
            return normalize(view), label

        def unlabelled_map(image):
            if weak_views:
                return tuple(normalize(augment.weak_view(image, seed=augment.derived_seed(unlabelled_seed, 11 * k)))
                             for k in range(weak_views))
            if policy == "randaugment":  # the reference's pair: aug starts from this very ori image
                ori, aug = augment.unlabelled_views(image, magnitude=magnitude, num_layers=num_layers,
                                                    seed=unlabelled_seed, overflow=overflow)
            else:
                ori = augment.ori_view(image, seed=unlabelled_seed)
                aug = strong_view(ori, policy, magnitude, num_layers,
                                  augment.derived_seed(unlabelled_seed, 7), overflow)
            return normalize(ori), normalize(aug)

        # Shuffle after repeat, as the reference: epochs blur into one stream.
        labelled = (tf.data.Dataset.from_tensor_slices((self.labelled_images, self.labelled_labels))
                    .repeat().shuffle(shuffle_buffer, seed=seed)
                    .map(labelled_map, num_parallel_calls=parallel)
                    .batch(batch_size, drop_remainder=True))
        if self.unlabelled_batch_size:
            unlabelled = (tf.data.Dataset.from_tensor_slices(self.unlabelled_images)
                          .repeat().shuffle(shuffle_buffer, seed=augment.derived_seed(seed, 1))
                          .map(unlabelled_map, num_parallel_calls=parallel)
                          .batch(self.unlabelled_batch_size, drop_remainder=True))
            dataset = tf.data.Dataset.zip((labelled, unlabelled)).prefetch(2)
            self.iterator = tf.data.make_initializable_iterator(dataset)
            (l_images, l_labels), unlabelled_views = self.iterator.get_next()
            if weak_views:
                self.batch = Batch(l_images, l_labels, None, None, tuple(unlabelled_views))
            else:
                self.batch = Batch(l_images, l_labels, unlabelled_views[0], unlabelled_views[1])
        else:
            self.iterator = tf.data.make_initializable_iterator(labelled.prefetch(2))
            l_images, l_labels = self.iterator.get_next()
            self.batch = Batch(l_images, l_labels, None, None)

    def initialize(self, session, images: np.ndarray, labels: np.ndarray, labelled_indices: np.ndarray,
                   unlabelled_indices: Optional[np.ndarray] = None) -> None:
        """Labelled = the recorded split; unlabelled = the split's unlabelled records (None: every training
        image, so it includes the labelled, as the MPL reference)."""
        feed = {self.labelled_images: images[labelled_indices],
                self.labelled_labels: labels[labelled_indices].astype(np.int64)}
        if self.unlabelled_batch_size:
            feed[self.unlabelled_images] = images if unlabelled_indices is None else images[unlabelled_indices]
        session.run(self.iterator.initializer, feed_dict=feed)
