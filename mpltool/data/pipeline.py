"""The tf.data input of a training step, built from the streams an algorithm declares.

An algorithm says what one step reads (`Algorithm.streams(recipe)`): a list of `Stream`s, each naming the
records it draws from (the split's labelled or unlabelled records), how many per step and replica, and
its `View`: what one record becomes (mpltool/data/views.py has the common ones; an algorithm may bring its
own). The pipeline builds every stream the same way -- the records repeated, shuffled, mapped through the
view and normalised to the network's input spec, batched -- and hands the step a dict: each view's names
to their tensors (a tuple of tensors for a view that makes several images of one record), and each
labelled stream's labels under the name it chose. Nothing here knows which algorithm asked.

Records enter through placeholders fed once at iterator initialisation, so the GraphDef (and every
checkpoint's meta graph) stays small however large the data set is: decoded pixels (CIFAR), or image
files that the pipeline reads, verifies and decodes itself (mpltool/data/records.py says how), so a data
set larger than memory streams from disk.
"""

import collections
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from mpltool.data.augment.ops import derived_seed
from mpltool.data.records import PixelReader
from mpltool.errors import InvalidInputError
from mpltool.tfv1 import tf

RECORDS = ("labelled", "unlabelled")

# A view: `names` (the batch keys of its outputs) and `make(image, seed)` -> a tuple with one entry per
# name, each a uint8 HWC image at the input size or a tuple of them (K views of one record).
# `full_image`: make receives each image at its own (decoded) size and brings it to the input size
# itself (a random-resized crop); otherwise the reader has framed it at the input size already.
View = collections.namedtuple("View", ["names", "make", "full_image"])
View.__new__.__defaults__ = (False,)

Stream = collections.namedtuple("Stream", [
    "records",     # "labelled" or "unlabelled": which of the split's records it draws
    "per_step",    # records per step and replica
    "view",        # the View every record goes through
    "labels",      # the batch key of the records' labels (labelled streams), or None
    "per_domain",  # one stream per source domain, `per_step` records from each (image folders); each key
                   # then holds a tuple over the domains
    "group",       # streams of one group are pulled together, by one iterator; a step phase that needs
                   # only some groups pulls only theirs (Algorithm phases)
])
Stream.__new__.__defaults__ = (None, False, "step")

# Op-seed offsets from the run's seed: (shuffle, map) of the first stream of each kind of records, so the
# streams of the algorithms that existed before streams were declared draw what they drew then. A
# further stream of the same records is 1000 further on; source domain k shuffles 31·k further on.
SEED_OFFSETS = {"labelled": (0, 101), "unlabelled": (1, 202)}
NEXT_STREAM_OFFSET = 1000
DOMAIN_SHUFFLE_OFFSET = 31


def check_streams(streams: Sequence[Stream]) -> None:
    """Every declaration well formed, and no two outputs under one batch key."""
    seen = set()
    for stream in streams:
        if stream.records not in RECORDS:
            raise ValueError("a stream draws {} records, not {!r}".format(" or ".join(RECORDS), stream.records))
        if int(stream.per_step) < 1:
            raise ValueError("a stream needs at least one record per step, got {}".format(stream.per_step))
        if stream.labels and stream.records != "labelled":
            raise ValueError("only labelled records have labels ({} stream)".format(stream.records))
        keys = list(stream.view.names) + ([stream.labels] if stream.labels else [])
        clash = [key for key in keys if key in seen]
        if clash:
            raise ValueError("two streams put {} in the batch".format(", ".join(clash)))
        seen.update(keys)


class TrainInput:
    """The declared streams as tf.data iterators; `batch` is the dict a step is built on.

    `normalize(images)` maps uint8 views to the network's input (its input spec), so every model sees in
    training exactly what its exported graph computes from raw pixels. `num_domains`: how many source
    domains the labelled records come from (per-domain streams need it; 0 for data without domains).
    """

    def __init__(self, streams: Sequence[Stream], normalize: Callable, shuffle_buffer: int = 1024, seed=None,
                 image_shape=(32, 32, 3), num_domains: int = 0, reader=None, cap_shuffle_buffer: bool = False):
        check_streams(streams)
        self.streams = list(streams)
        self.image_shape = tuple(image_shape)
        self.reader = reader or PixelReader(self.image_shape)  # what a record is (records.reader_of)
        # The reference's memoize: range(N).repeat().shuffle(min(N, buffer)) -- a buffer never larger than the
        # records a stream draws (recipe key shuffle_buffer_cap: records); else the recipe's buffer as given.
        self.cap_shuffle_buffer = bool(cap_shuffle_buffer)
        self._placeholders = collections.OrderedDict()  # (records, domain or None) -> (images, labels)
        parallel = tf.data.experimental.AUTOTUNE
        counts = collections.Counter()
        groups = collections.OrderedDict()  # group -> [(stream, dataset)]
        for stream in self.streams:
            shuffle_offset, map_offset = SEED_OFFSETS[stream.records]
            shuffle_offset += NEXT_STREAM_OFFSET * counts[stream.records]
            map_offset += NEXT_STREAM_OFFSET * counts[stream.records]
            counts[stream.records] += 1
            domains = range(num_domains) if stream.per_domain else [None]
            if stream.per_domain and not num_domains:
                raise InvalidInputError("this algorithm reads B images from each source domain per step, but the "
                                        "data has no domains", hint="prepare image folders with `mpltool data "
                                                                    "prepare --images DIR`")
            datasets = []
            for domain in domains:
                images, labels = self._placeholder(stream.records, domain)
                shuffle_seed = derived_seed(seed, shuffle_offset + DOMAIN_SHUFFLE_OFFSET * (domain or 0))
                buffer = shuffle_buffer
                if self.cap_shuffle_buffer:
                    buffer = tf.minimum(tf.cast(tf.size(labels), tf.int64), tf.constant(int(shuffle_buffer), tf.int64))
                datasets.append(self._dataset(stream, images, labels, shuffle_seed, derived_seed(seed, map_offset),
                                              normalize, buffer, parallel, self.reader))
            groups.setdefault(stream.group, []).append(
                (stream, datasets[0] if not stream.per_domain else tf.data.Dataset.zip(tuple(datasets))))
        self.initializers = []
        self.batch = {}  # type: Dict[str, object]
        self.batch_by_group = collections.OrderedDict()
        for group, members in groups.items():
            zipped = members[0][1] if len(members) == 1 else tf.data.Dataset.zip(tuple(d for _, d in members))
            iterator = tf.data.make_initializable_iterator(zipped.prefetch(2))
            self.initializers.append(iterator.initializer)
            pulled = iterator.get_next()
            parts = [pulled] if len(members) == 1 else list(pulled)
            group_batch = {}
            for (stream, _), part in zip(members, parts):
                group_batch.update(self._named(stream, part))
            self.batch_by_group[group] = group_batch
            self.batch.update(group_batch)

    def _placeholder(self, records: str, domain: Optional[int]):
        key = (records, domain)
        if key not in self._placeholders:
            suffix = "" if domain is None else "_domain_{}".format(domain)
            handles = self.reader.placeholders("{}{}".format(records, suffix))
            labels = tf.placeholder(tf.int64, (None,), name="{}_labels{}".format(records, suffix))
            self._placeholders[key] = (handles, labels)
        return self._placeholders[key]

    @staticmethod
    def _dataset(stream: Stream, handles, labels, shuffle_seed, map_seed, normalize, shuffle_buffer, parallel,
                 reader):
        def as_input(output):
            return tf.nest.map_structure(normalize, output)

        def viewed(record):
            image = reader.decode(record, full=stream.view.full_image)
            return tuple(as_input(o) for o in stream.view.make(image, map_seed))

        if stream.labels:
            def mapped(record, label):
                return viewed(record) + (label,)
        else:
            mapped = viewed
        records = reader.dataset(handles, labels if stream.labels else None, parallel)
        # Shuffle after repeat, as the reference: epochs blur into one stream.
        return (records.repeat().shuffle(shuffle_buffer, seed=shuffle_seed)
                .map(mapped, num_parallel_calls=parallel)
                .batch(int(stream.per_step), drop_remainder=True))

    @staticmethod
    def _named(stream: Stream, pulled) -> Dict[str, object]:
        """The batch keys of one stream's element: each view name, then the labels'. A per-domain stream's
        element is a tuple over the domains; each key then holds a tuple too."""
        names = list(stream.view.names) + ([stream.labels] if stream.labels else [])
        if not stream.per_domain:
            return dict(zip(names, pulled))
        return {name: tuple(domain[i] for domain in pulled) for i, name in enumerate(names)}

    def initialize(self, session, images: np.ndarray, labels: np.ndarray, labelled_indices: np.ndarray,
                   unlabelled_indices: Optional[np.ndarray] = None, domains: Optional[np.ndarray] = None) -> None:
        """Labelled = the recorded split; unlabelled = the split's unlabelled records (None: every training
        image, so it includes the labelled, as the reference systems train). `domains`: each training record's source
        domain (0..D-1), which splits a per-domain stream's records."""
        chosen = {"labelled": labelled_indices,
                  "unlabelled": np.arange(len(labels)) if unlabelled_indices is None else unlabelled_indices}
        feed = {}
        for (records, domain), (handles, label_ph) in self._placeholders.items():
            indices = chosen[records]
            if domain is not None:
                indices = indices[domains[indices] == domain]
                if indices.size == 0:
                    raise InvalidInputError("source domain {} has no training records".format(domain))
            feed.update(self.reader.feed(handles, images, indices))
            feed[label_ph] = labels[indices].astype(np.int64)
        session.run(self.initializers, feed_dict=feed)
