"""Records that are not held in memory: image files (and TFRecord shards) read, verified and decoded only
when a run needs them, so memory stays flat however large the data set is.

Two kinds of training records reach the input pipeline (mpltool/data/pipeline.py), behind one reader
interface:
- pixels: a uint8 [N, H, W, 3] numpy array (CIFAR, the legacy decoded image folders), fed once at
  iterator initialisation, exactly as before;
- files: `FileImages`, a lazy array of image files. The pipeline reads each file's bytes, checks them
  against the content fingerprint recorded at `data prepare`, decodes and resizes them to the model's
  input size inside tf.data (parallel map, prefetch). Evaluation, freeze's parity check and the report
  slice the same object and get decoded batches on demand.

Integrity, as docs/data-integrity.md explains: at start-up every file's size (and mtime) is compared
with the index (`check_files`: a cost that grows with the number of files, not their bytes); every read
recomputes the file's farmhash64 fingerprint (TensorFlow's `tf.fingerprint`, computed by the same op
at prepare) and stops the run with exit 3 naming the file when it differs.
"""

import abc
import os
from typing import Dict, Optional, Tuple

import numpy as np

from mpltool.errors import InvalidInputError

# The tag an integrity assertion carries in its message, so the error can be told from any other.
INTEGRITY_TAG = "mpltool-integrity-failure"
DATA_HINT = "restore the original file, or re-import the data with `mpltool data prepare ... --force`"


# ---------------------------------------------------------------------------------------------------
# graph pieces (one place: prepare, training and evaluation decode through these)


def fingerprint(data):
    """farmhash64 of a scalar string tensor, as an int64 scalar (the index stores the same number)."""
    from mpltool.tfv1 import tf

    return tf.bitcast(tf.fingerprint(tf.reshape(data, [1]), method="farmhash64")[0], tf.int64)


def decode_image(data):
    """Any JPEG/PNG/BMP/GIF bytes to uint8 RGB [h, w, 3] at the file's own size."""
    from mpltool.tfv1 import tf

    image = tf.image.decode_image(data, channels=3, expand_animations=False)
    image.set_shape((None, None, 3))
    return image


def resize_image(image, size: Tuple[int, int]):
    """uint8 [h, w, 3] to uint8 [size, 3]: bilinear with an antialiasing filter when shrinking (TF 2's
    resize, in TF 1.15 as compat.v2), so a 227-px photo made 32 px does not alias; a same-size image
    passes through unchanged."""
    from tensorflow.compat import v2 as tf2

    from mpltool.tfv1 import tf

    resized = tf2.image.resize(tf.cast(image, tf.float32), size, method="bilinear", antialias=True)
    resized = tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)
    resized.set_shape(tuple(size) + (3,))
    return resized


def centre_crop(image, fraction: float):
    """The centre square of side int(fraction * the shorter side), at least 1 px: tensorflow/models'
    evaluation crop. With fraction 224/256, cropping then resizing to 224 frames the image exactly as
    "resize the shorter side to 256, take the centre 224x224" does, with one resampling instead of two."""
    from mpltool.tfv1 import tf

    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.maximum(tf.cast(float(fraction) * tf.cast(tf.minimum(height, width), tf.float32), tf.int32), 1)
    top, left = (height - side + 1) // 2, (width - side + 1) // 2
    return tf.slice(image, tf.stack([top, left, 0]), tf.stack([side, side, 3]))


def frame_image(image, size: Tuple[int, int], crop: float = 0.0):
    """A decoded image brought to the network's `size` for evaluation: the whole image resized (crop 0,
    mpltool's default), or its centre `crop` fraction (recipe key eval_crop; 0.875 = 224/256)."""
    return resize_image(centre_crop(image, crop) if crop else image, size)


def verified(data, expected, name):
    """`data`, passed on only when its fingerprint is `expected`; otherwise the step fails with an
    error naming `name` (see `data_error`)."""
    from mpltool.tfv1 import tf

    check = tf.debugging.Assert(tf.equal(fingerprint(data), expected), [INTEGRITY_TAG, name], summarize=1)
    with tf.control_dependencies([check]):
        return tf.identity(data)


def read_verified(path, expected):
    from mpltool.tfv1 import tf

    return verified(tf.io.read_file(path), expected, path)


def data_error(exc: BaseException) -> Optional[InvalidInputError]:
    """The one-line exit-3 error for a TensorFlow failure that came from reading the data (a changed,
    missing, truncated or undecodable file), or None for any other failure."""
    from mpltool.tfv1 import tf

    if not isinstance(exc, tf.errors.OpError):
        return None
    message = getattr(exc, "message", None) or str(exc)
    if INTEGRITY_TAG in message:
        name = message.split(INTEGRITY_TAG, 1)[1].strip(" ]['\"\n").split("]")[0].strip(" [\"'")
        return InvalidInputError("{} changed since `data prepare` (its content fingerprint differs); not "
                                 "training on it".format(name), hint=DATA_HINT)
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    if isinstance(exc, tf.errors.NotFoundError):
        return InvalidInputError("a prepared data file is missing: {}".format(first), hint=DATA_HINT)
    if isinstance(exc, tf.errors.DataLossError):
        return InvalidInputError("a prepared data file is truncated or corrupt: {}".format(first), hint=DATA_HINT)
    if isinstance(exc, tf.errors.InvalidArgumentError) and ("image" in first.lower() or "decode" in first.lower()
                                                             or "jpeg" in first.lower() or "png" in first.lower()):
        return InvalidInputError("a prepared image does not decode: {}".format(first), hint=DATA_HINT)
    return None


# ---------------------------------------------------------------------------------------------------
# start-up check


def check_files(root: str, relpaths: np.ndarray, sizes: np.ndarray, mtimes: np.ndarray, sha256s: np.ndarray,
                shown_root: str) -> int:
    """Every file `root`/relpath present with its recorded size; a file whose mtime moved (a copy, a
    checkout, a touch) is re-hashed, and passes only with its recorded sha256 (raw 32-byte digests). A file
    is named as `shown_root`/relpath. Returns how many were re-hashed. Costs one stat per file, whatever
    their bytes."""
    from mpltool.manifest.files import sha256_file

    rehashed = 0
    for k, rel in enumerate(relpaths):
        rel = rel.decode("utf-8") if isinstance(rel, bytes) else str(rel)
        path = os.path.join(root, rel)
        shown = "{}/{}".format(shown_root, rel)
        try:
            stat = os.stat(path)
        except OSError:
            raise InvalidInputError("prepared data file {} is missing".format(shown), hint=DATA_HINT)
        if stat.st_size != int(sizes[k]):
            raise InvalidInputError("prepared data file {} changed since `data prepare`: {} bytes, recorded {}"
                                    .format(shown, stat.st_size, int(sizes[k])), hint=DATA_HINT)
        if stat.st_mtime_ns != int(mtimes[k]):
            rehashed += 1
            if bytes.fromhex(sha256_file(path)) != bytes(sha256s[k]).ljust(32, b"\0"):
                raise InvalidInputError("prepared data file {} changed since `data prepare` (its sha256 differs)"
                                        .format(shown), hint=DATA_HINT)
    return rehashed


# ---------------------------------------------------------------------------------------------------
# readers: what the input pipeline feeds and how a record becomes an image


class PixelReader:
    """Decoded pixels in memory: one uint8 placeholder, nothing to read or decode."""

    reads = False

    def __init__(self, image_shape):
        self.image_shape = tuple(image_shape)

    def placeholders(self, name: str):
        from mpltool.tfv1 import tf

        return (tf.placeholder(tf.uint8, (None,) + self.image_shape, name="{}_images".format(name)),)

    def feed(self, handles, images, indices) -> Dict:
        return {handles[0]: images[indices]}

    def read(self, *handles):
        return handles[0]

    def decode(self, record, full=False):
        """The image of one record: framed at the input size, or (`full`) at its own size, for a view
        that crops it itself. Pixels in memory are both."""
        return record

    def dataset(self, handles, labels=None, parallel=None):
        """The records fed (with their labels, when a placeholder of them is given), in the order fed;
        read (and verified) when the reader reads files, so a shuffle buffer after it holds bytes."""
        from mpltool.tfv1 import tf

        records = handles[0] if len(handles) == 1 else tuple(handles)
        if labels is not None:
            dataset = tf.data.Dataset.from_tensor_slices((records, labels))
            if self.reads:
                dataset = dataset.map(lambda handle, label: (self.read(*handle), label), num_parallel_calls=parallel)
            return dataset
        dataset = tf.data.Dataset.from_tensor_slices(records)
        if self.reads:
            dataset = dataset.map(lambda *handle: self.read(*handle), num_parallel_calls=parallel)
        return dataset


class FileReader(PixelReader):
    """Image files: (path, fingerprint) placeholders; each file read and verified before the shuffle,
    decoded and framed (frame_image) after it."""

    reads = True

    def __init__(self, size: Tuple[int, int], root: str = "", crop: float = 0.0):
        self.size = tuple(size)
        self.root = root
        self.crop = float(crop)
        super().__init__(self.size + (3,))

    def placeholders(self, name: str):
        from mpltool.tfv1 import tf

        return (tf.placeholder(tf.string, (None,), name="{}_paths".format(name)),
                tf.placeholder(tf.int64, (None,), name="{}_fingerprints".format(name)))

    def feed(self, handles, images, indices) -> Dict:
        """Paths relative to the images' folder (the folder is joined in the graph: a fed string per file
        is all the memory a file costs)."""
        return {handles[0]: images.relpaths[indices], handles[1]: images.fingerprints[indices]}

    def read(self, relpath, expected):
        from mpltool.tfv1 import tf

        return read_verified(tf.strings.join([self.root + os.sep, relpath]), expected)

    def decode(self, record, full=False):
        image = decode_image(record)
        return image if full else frame_image(image, self.size, self.crop)


class ShardReader(FileReader):
    """Records in TFRecord shards: the shards holding the chosen records are read in order, every record
    counted (its row in the index), the unchosen skipped, each chosen one verified against its recorded
    fingerprint before it is parsed; a record's label is its own (less the index's label offset)."""

    def __init__(self, size, image_key: str, label_key: str, label_offset: int, crop: float = 0.0):
        super().__init__(size, "", crop)
        self.image_key, self.label_key, self.label_offset = image_key, label_key, int(label_offset)

    def placeholders(self, name: str):
        from mpltool.tfv1 import tf

        return (tf.placeholder(tf.string, (None,), name="{}_shards".format(name)),
                tf.placeholder(tf.int64, (None,), name="{}_first_rows".format(name)),
                tf.placeholder(tf.int64, (None,), name="{}_row_counts".format(name)),
                tf.placeholder(tf.bool, (None,), name="{}_chosen_rows".format(name)),
                tf.placeholder(tf.int64, (None,), name="{}_fingerprints".format(name)))

    def feed(self, handles, images, indices) -> Dict:
        rows = images.rows[np.asarray(indices, np.int64)]
        if rows.size > 1 and np.any(np.diff(rows) <= 0):
            raise ValueError("records in shards are read in their order: the chosen rows must increase")
        shards = np.unique(images.shard_of[rows])
        chosen = np.zeros(images.total_rows, bool)
        chosen[rows] = True
        return {handles[0]: images.shard_paths[shards], handles[1]: images.shard_first[shards],
                handles[2]: images.shard_rows[shards], handles[3]: chosen, handles[4]: images.all_fingerprints}

    def dataset(self, handles, labels=None, parallel=None):
        from mpltool.tfv1 import tf

        paths, firsts, counts, chosen, fingerprints = handles

        def shard(path, first, count):
            return tf.data.Dataset.zip((tf.data.TFRecordDataset(path), tf.data.Dataset.range(first, first + count),
                                        tf.data.Dataset.from_tensors(path).repeat()))

        def parsed(serialized, row, path):
            example = tf.io.parse_single_example(
                verified(serialized, tf.gather(fingerprints, row), path),
                {self.image_key: tf.io.FixedLenFeature((), tf.string),
                 self.label_key: tf.io.FixedLenFeature((), tf.int64)})
            image = example[self.image_key]
            return image if labels is None else (image, example[self.label_key] - self.label_offset)

        records = (tf.data.Dataset.from_tensor_slices((paths, firsts, counts)).flat_map(shard)
                   .filter(lambda serialized, row, path: tf.gather(chosen, row)))
        return records.map(parsed, num_parallel_calls=parallel)


def reader_of(images):
    """The reader of a training set: its own (`FileImages`) or pixels in memory."""
    if isinstance(images, np.ndarray):
        return PixelReader(images.shape[1:])
    return images.reader()


def at_input_size(images, image_shape):
    """A lazy test set decoded at a model's input (H, W, ...); pixels in memory are what they are (a model
    of another size refuses them where it is fed)."""
    size = tuple(image_shape or ())[:2]
    if isinstance(images, np.ndarray) or len(size) < 2 or None in size or tuple(images.shape[1:3]) == size:
        return images
    return images.resized(size)


def with_eval_crop(images, crop: float):
    """A lazy test or validation set framed by the recipe's eval_crop; pixels in memory are taken as
    they are (DataSource.check_recipe refuses eval_crop for them)."""
    if not crop or isinstance(images, np.ndarray):
        return images
    return images.cropped(crop)


def rank_share(images, indices, rank: int, size: int):
    """The records rank `rank` of `size` trains on, taken before any shuffling: every size-th record (so
    each rank reads only its own files), or, for records in shards, those of every size-th shard (each
    rank opens only its own shards)."""
    indices = np.asarray(indices)
    if size == 1:
        return indices
    if hasattr(images, "rank_share"):
        return images.rank_share(indices, rank, size)
    return indices[rank::size]


def subset(images, indices):
    """Records `indices` of a training set, without decoding anything."""
    if isinstance(images, np.ndarray):
        return images[indices]
    return images.take(np.asarray(indices, np.int64))


class _BatchDecoder:
    """A small graph that reads, verifies, decodes and resizes chosen records in parallel, through the
    reader training uses."""

    def __init__(self, reader):
        from mpltool.tfv1 import tf

        self.graph = tf.Graph()
        with self.graph.as_default():
            self.reader = reader
            self.handles = reader.placeholders("decode")
            self.count = tf.placeholder(tf.int64, ())
            parallel = tf.data.experimental.AUTOTUNE
            dataset = reader.dataset(self.handles, None, parallel).map(reader.decode, num_parallel_calls=parallel)
            iterator = tf.data.make_initializable_iterator(dataset.batch(self.count))
            self.init, self.images = iterator.initializer, iterator.get_next()
        self.session = tf.Session(graph=self.graph, config=tf.ConfigProto(inter_op_parallelism_threads=2))

    def __call__(self, images, indices) -> np.ndarray:
        feed = self.reader.feed(self.handles, images, indices)
        feed[self.count] = len(indices)
        try:
            self.session.run(self.init, feed_dict=feed)
            return self.session.run(self.images)
        except Exception as exc:
            error = data_error(exc)
            if error is not None:
                raise error
            raise


_DECODERS = {}  # type: Dict[Tuple, _BatchDecoder]


class LazyImages(abc.ABC):
    """A lazy uint8 [N, H, W, 3] array: slicing (or indexing with an array) reads, verifies and decodes
    just those records at (H, W). What eval, freeze and the report iterate over in batches, and what
    training streams from."""

    dtype = np.dtype(np.uint8)
    ndim = 4
    size = (1, 1)
    crop = 0.0  # the centre fraction each image is framed by (frame_image); 0: the whole image

    def cropped(self, crop: float) -> "LazyImages":
        """The same records framed by their centre `crop` fraction (recipe key eval_crop)."""
        import copy

        framed = copy.copy(self)
        framed.crop = float(crop)
        return framed

    @property
    def shape(self):
        return (len(self),) + self.size + (3,)

    @abc.abstractmethod
    def reader(self):
        """The reader that reads, verifies and decodes these records (training's and eval's)."""

    @abc.abstractmethod
    def _decoder_key(self) -> Tuple:
        """What decides the decode graph: records with equal keys share one."""

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self[np.array([int(key)])][0]
        if isinstance(key, slice):
            key = np.arange(len(self))[key]
        indices = np.asarray(key, np.int64)
        if indices.size == 0:
            return np.zeros((0,) + self.shape[1:], np.uint8)
        wanted, back = np.unique(indices, return_inverse=True)  # read in the records' order, once each
        decoder_key = self._decoder_key()
        if decoder_key not in _DECODERS:
            _DECODERS[decoder_key] = _BatchDecoder(self.reader())
        return _DECODERS[decoder_key](self, wanted)[back]

    def __array__(self, dtype=None):
        images = self[:]
        return images if dtype is None else images.astype(dtype)


class FileImages(LazyImages):
    """Image files `root`/relpath, each verified by its fingerprint as it is read."""

    def __init__(self, root: str, relpaths: np.ndarray, fingerprints: np.ndarray, size: Tuple[int, int]):
        self.root = root
        self.relpaths = np.asarray(relpaths, dtype="S")
        self.fingerprints = np.asarray(fingerprints, np.int64)
        self.size = (int(size[0]), int(size[1]))

    @property
    def paths(self) -> np.ndarray:
        """Absolute paths (diagnostics and tests; the readers join them in the graph)."""
        return np.array([os.path.join(self.root, rel.decode("utf-8")) for rel in self.relpaths], dtype=object)

    def __len__(self):
        return len(self.relpaths)

    def take(self, indices) -> "FileImages":
        indices = np.asarray(indices, np.int64)
        return FileImages(self.root, self.relpaths[indices], self.fingerprints[indices], self.size).cropped(self.crop)

    def resized(self, size) -> "FileImages":
        return FileImages(self.root, self.relpaths, self.fingerprints, size).cropped(self.crop)

    def reader(self) -> FileReader:
        return FileReader(self.size, self.root, self.crop)

    def _decoder_key(self):
        return ("files", self.root, self.crop) + self.size  # the folder is a constant of the read graph


class ShardImages(LazyImages):
    """Records `rows` (increasing rows of the index) of TFRecord shards."""

    def __init__(self, shards: Dict, rows: np.ndarray, size: Tuple[int, int]):
        self.shards = shards  # shard_paths, shard_first, shard_rows, shard_of, fingerprints, keys, label_offset
        self.rows = np.asarray(rows, np.int64)
        self.size = (int(size[0]), int(size[1]))

    shard_paths = property(lambda self: self.shards["paths"])
    shard_first = property(lambda self: self.shards["first"])
    shard_rows = property(lambda self: self.shards["rows"])
    shard_of = property(lambda self: self.shards["shard_of"])
    all_fingerprints = property(lambda self: self.shards["fingerprints"])
    total_rows = property(lambda self: len(self.shards["fingerprints"]))

    def __len__(self):
        return len(self.rows)

    def take(self, indices) -> "ShardImages":
        return ShardImages(self.shards, self.rows[np.asarray(indices, np.int64)], self.size).cropped(self.crop)

    def resized(self, size) -> "ShardImages":
        return ShardImages(self.shards, self.rows, size).cropped(self.crop)

    def rank_share(self, indices, rank: int, size: int):
        shard_ids = np.unique(self.shard_of[self.rows[indices]])
        if shard_ids.size < size:
            raise InvalidInputError("the {} shards of these records cannot be shared by {} ranks (each reads its "
                                    "own shards)".format(shard_ids.size, size),
                                    hint="write more shards (`mpltool data prepare --images DIR --shards N`), or "
                                         "use fewer processes")
        mine = shard_ids[rank::size]
        return np.asarray(indices)[np.isin(self.shard_of[self.rows[indices]], mine)]

    def reader(self) -> ShardReader:
        return ShardReader(self.size, self.shards["image_key"], self.shards["label_key"], self.shards["label_offset"],
                           self.crop)

    def _decoder_key(self):
        # The graph depends on the reader's settings only; which shards and rows it reads is fed.
        return ("shards", self.shards["image_key"], self.shards["label_key"], self.shards["label_offset"],
                self.crop) + self.size
