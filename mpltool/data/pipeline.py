"""The tf.data input of a training step: the labelled view and, when the algorithm asks for them, the
unlabelled "ori" and "aug" views (docs/mpl-reference.md §1).

Images enter through placeholders fed once at iterator initialisation, so the GraphDef (and every
checkpoint's meta graph) stays small however large the data set is.
"""

import collections
from typing import Optional

import numpy as np

from mpltool.data import views
from mpltool.data.augment.ops import derived_seed
from mpltool.errors import InvalidInputError
from mpltool.tfv1 import tf

Batch = collections.namedtuple("Batch", ["labelled_images", "labels", "ori_images", "aug_images", "unlabelled_views",
                                         "domain_images", "domain_labels"])
Batch.__new__.__defaults__ = (None, None, None)


class TrainInput:
    """Per step: B labelled images and, with unlabelled_ratio > 0, U = unlabelled_ratio·B unlabelled images,
    either as ori (flip/pad/crop) + aug (the strong view of `policy`) or, with weak_views = K > 0, as K
    weak views (flip, reflect-pad crop: MixMatch's). The labelled view is flip/pad/crop (the weak view
    with weak_views), or the strong view when the algorithm asks for it (`labelled_strong`: supervised
    training with a policy). unlabelled_ratio = 0 builds no unlabelled stream (its fields are None).

    With pair_views (BYOL), each unlabelled image comes as two independent byol_views.byol_view views and
    the labelled view is crop/flip/resize. With num_domains = D > 0 (MASF), the labelled stream is D
    streams, one per source domain, each giving B images a step (batch.domain_images/domain_labels; the
    labelled fields hold the first domain's).

    `normalize` maps uint8 views to the network's input (its input spec), so every model sees in training
    exactly what its exported graph computes from raw pixels."""

    def __init__(self, batch_size, unlabelled_ratio, magnitude=16, num_layers=2, shuffle_buffer=1024,
                 seed=None, image_shape=(32, 32, 3), overflow="clip", policy="randaugment",
                 labelled_strong=False, weak_views=0, normalize=None, pair_views=False,
                 num_domains=0):
        if normalize is None:
            from mpltool.models import input_spec, normalize_input

            spec = input_spec("wrn-28-2")
            normalize = lambda images: normalize_input(images, spec)  # noqa: E731
        self.batch_size = batch_size
        self.unlabelled_batch_size = batch_size * unlabelled_ratio
        self.labelled_images = tf.placeholder(tf.uint8, (None,) + tuple(image_shape), name="labelled_images")
        self.labelled_labels = tf.placeholder(tf.int64, (None,), name="labelled_labels")
        self.unlabelled_images = tf.placeholder(tf.uint8, (None,) + tuple(image_shape), name="unlabelled_images")
        parallel = tf.data.experimental.AUTOTUNE

        # Distinct op seeds per stream: with only a graph-level seed, random ops inside different map
        # functions can receive the same seeds and draw correlated numbers.
        view_options = pair_views if isinstance(pair_views, dict) else {}  # e.g. BYOL's min_crop
        labelled_seed = derived_seed(seed, 101)
        unlabelled_seed = derived_seed(seed, 202)

        def labelled_map(image, label):
            if pair_views:
                from mpltool.data import byol_views

                return normalize(byol_views.crop_flip_resize_view(image, seed=labelled_seed, **view_options)), label
            if labelled_strong:
                view = views.strong_view(image, policy, magnitude, num_layers, labelled_seed, overflow)
            elif weak_views:
                view = views.weak_view(image, seed=labelled_seed)
            else:
                view = views.labelled_view(image, seed=labelled_seed)
            return normalize(view), label

        def unlabelled_map(image):
            if pair_views:
                from mpltool.data import byol_views

                return tuple(normalize(view) for view in byol_views.byol_pair(image, seed=unlabelled_seed,
                                                                              **view_options))
            if weak_views:
                return tuple(normalize(views.weak_view(image, seed=derived_seed(unlabelled_seed, 11 * k)))
                             for k in range(weak_views))
            if policy == "randaugment":  # the reference's pair: aug starts from this very ori image
                ori, aug = views.unlabelled_views(image, magnitude=magnitude, num_layers=num_layers,
                                                    seed=unlabelled_seed, overflow=overflow)
            else:
                ori = views.ori_view(image, seed=unlabelled_seed)
                aug = views.strong_view(ori, policy, magnitude, num_layers,
                                  derived_seed(unlabelled_seed, 7), overflow)
            return normalize(ori), normalize(aug)

        # Shuffle after repeat, as the reference: epochs blur into one stream.
        def labelled_stream(images, labels, stream_seed):
            return (tf.data.Dataset.from_tensor_slices((images, labels))
                    .repeat().shuffle(shuffle_buffer, seed=stream_seed)
                    .map(labelled_map, num_parallel_calls=parallel)
                    .batch(batch_size, drop_remainder=True))

        self.domain_placeholders = [
            (tf.placeholder(tf.uint8, (None,) + tuple(image_shape), name="domain_{}_images".format(k)),
             tf.placeholder(tf.int64, (None,), name="domain_{}_labels".format(k))) for k in range(num_domains)]
        if num_domains:
            labelled = tf.data.Dataset.zip(tuple(
                labelled_stream(images, labels, derived_seed(seed, 31 * k))
                for k, (images, labels) in enumerate(self.domain_placeholders)))
        else:
            labelled = labelled_stream(self.labelled_images, self.labelled_labels, seed)
        if self.unlabelled_batch_size:
            unlabelled = (tf.data.Dataset.from_tensor_slices(self.unlabelled_images)
                          .repeat().shuffle(shuffle_buffer, seed=derived_seed(seed, 1))
                          .map(unlabelled_map, num_parallel_calls=parallel)
                          .batch(self.unlabelled_batch_size, drop_remainder=True))
            if pair_views:
                # Two iterators: BYOL's phases each pull only their own stream (pre-training the view
                # pairs, linear evaluation the labelled images), so neither computes the other's views.
                iterators = [tf.data.make_initializable_iterator(d.prefetch(2)) for d in (labelled, unlabelled)]
                self.initializers = [it.initializer for it in iterators]
                labelled_batch, unlabelled_views = [it.get_next() for it in iterators]
            else:
                iterator = tf.data.make_initializable_iterator(tf.data.Dataset.zip((labelled, unlabelled)).prefetch(2))
                self.initializers = [iterator.initializer]
                labelled_batch, unlabelled_views = iterator.get_next()
            if weak_views or pair_views:
                self.batch = self._batch(labelled_batch, num_domains, unlabelled_views=tuple(unlabelled_views))
            else:
                self.batch = self._batch(labelled_batch, num_domains, ori_images=unlabelled_views[0],
                                         aug_images=unlabelled_views[1])
        else:
            iterator = tf.data.make_initializable_iterator(labelled.prefetch(2))
            self.initializers = [iterator.initializer]
            self.batch = self._batch(iterator.get_next(), num_domains)

    @staticmethod
    def _batch(labelled_batch, num_domains, **unlabelled):
        if not num_domains:
            return Batch(labelled_batch[0], labelled_batch[1], unlabelled.get("ori_images"),
                         unlabelled.get("aug_images"), unlabelled.get("unlabelled_views"))
        images = tuple(pair[0] for pair in labelled_batch)
        labels = tuple(pair[1] for pair in labelled_batch)
        return Batch(images[0], labels[0], unlabelled.get("ori_images"), unlabelled.get("aug_images"),
                     unlabelled.get("unlabelled_views"), images, labels)

    def initialize(self, session, images: np.ndarray, labels: np.ndarray, labelled_indices: np.ndarray,
                   unlabelled_indices: Optional[np.ndarray] = None, domains: Optional[np.ndarray] = None) -> None:
        """Labelled = the recorded split; unlabelled = the split's unlabelled records (None: every training
        image, so it includes the labelled, as the MPL reference). `domains`: each training record's source
        domain (0..D-1), which splits the labelled records into the per-domain streams."""
        if self.domain_placeholders:
            feed = {}
            for k, (domain_images, domain_labels) in enumerate(self.domain_placeholders):
                chosen = labelled_indices[domains[labelled_indices] == k]
                if chosen.size == 0:
                    raise InvalidInputError("source domain {} has no training records".format(k))
                feed.update({domain_images: images[chosen], domain_labels: labels[chosen].astype(np.int64)})
        else:
            feed = {self.labelled_images: images[labelled_indices],
                    self.labelled_labels: labels[labelled_indices].astype(np.int64)}
        if self.unlabelled_batch_size:
            feed[self.unlabelled_images] = images if unlabelled_indices is None else images[unlabelled_indices]
        session.run(self.initializers, feed_dict=feed)
