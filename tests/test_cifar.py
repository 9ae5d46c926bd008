import hashlib
import os

import numpy as np
import pytest

from cifar_fixtures import CLASS_NAMES, make_cifar_archive, make_cifar_dir, make_records, write_archive
from mpltool.data import cifar
from mpltool.errors import InvalidInputError, UsageError

ALL_FILES = cifar.TRAIN_FILES + (cifar.TEST_FILE,)


def _sha(path):
    with open(str(path), "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()


def _tree_hashes(directory):
    return {name: _sha(os.path.join(str(directory), name)) for name in sorted(os.listdir(str(directory)))}


def _one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


# --- reading and writing -------------------------------------------------------------------------------

def test_write_then_read_round_trips_exact_pixels_and_chw_layout(tmp_path):
    images, labels = make_records(7, seed=3)
    images[2, 4, 9] = (11, 222, 33)  # row 4, column 9: R=11, G=222, B=33
    labels[2] = 9
    path = tmp_path / "one.bin"
    cifar.write_cifar_file(path, images, labels)

    raw = np.fromfile(str(path), dtype=np.uint8)
    assert raw.size == 7 * 3073
    record = raw[2 * 3073:3 * 3073]
    assert record[0] == 9
    pixel = 4 * 32 + 9  # row-major position inside each 32x32 plane
    assert (record[1 + pixel], record[1 + 1024 + pixel], record[1 + 2048 + pixel]) == (11, 222, 33)

    read_images, read_labels = cifar.read_images([path])
    assert read_images.dtype == np.uint8 and read_images.shape == (7, 32, 32, 3)
    assert read_labels.dtype == np.int64
    assert tuple(read_images[2, 4, 9]) == (11, 222, 33)
    np.testing.assert_array_equal(read_images, images)
    np.testing.assert_array_equal(read_labels, labels)


def test_read_images_concatenates_in_the_given_order(tmp_path):
    first, first_labels = make_records(5, seed=1)
    second, second_labels = make_records(3, seed=2)
    cifar.write_cifar_file(tmp_path / "a.bin", first, first_labels)
    cifar.write_cifar_file(tmp_path / "b.bin", second, second_labels)
    images, labels = cifar.read_images([tmp_path / "b.bin", tmp_path / "a.bin"])
    np.testing.assert_array_equal(images, np.concatenate([second, first]))
    np.testing.assert_array_equal(labels, np.concatenate([second_labels, first_labels]))


def test_read_images_of_no_files_is_empty():
    images, labels = cifar.read_images([])
    assert images.shape == (0, 32, 32, 3) and labels.shape == (0,)


def test_read_images_rejects_a_bad_file(tmp_path):
    (tmp_path / "short.bin").write_bytes(b"\x00" * 3072)
    with pytest.raises(InvalidInputError, match="short.bin"):
        cifar.read_images([tmp_path / "short.bin"])


@pytest.mark.parametrize("images, labels", [
    (np.zeros((2, 32, 32, 3), np.float32), [0, 1]),
    (np.zeros((2, 3, 32, 32), np.uint8), [0, 1]),
    (np.zeros((2, 32, 32, 3), np.uint8), [0]),
    (np.zeros((2, 32, 32, 3), np.uint8), [0, 10]),
])
def test_write_cifar_file_rejects_malformed_arrays(tmp_path, images, labels):
    with pytest.raises(ValueError):
        cifar.write_cifar_file(tmp_path / "x.bin", images, labels)


def test_read_class_names(tmp_path):
    make_cifar_dir(tmp_path)
    assert cifar.read_class_names(tmp_path) == list(CLASS_NAMES)
    assert cifar.read_class_names(tmp_path / "nowhere") is None


# --- inspect_file ----------------------------------------------------------------------------------------

def test_inspect_file_reports_counts_size_and_sha256(tmp_path):
    images, _ = make_records(23, seed=5)
    labels = np.array([3] * 10 + [0] * 4 + [9] * 9)
    path = tmp_path / "custom.bin"
    cifar.write_cifar_file(path, images, labels)
    info = cifar.inspect_file(path)
    assert info == {
        "name": "custom.bin",
        "records": 23,
        "size": 23 * 3073,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "label_counts": [4, 0, 0, 10, 0, 0, 0, 0, 0, 9],
    }


def test_inspect_file_rejects_a_size_that_is_not_a_multiple_of_the_record(tmp_path):
    path = tmp_path / "data_batch_1.bin"
    path.write_bytes(b"\x01" * (2 * 3073 + 5))
    with pytest.raises(InvalidInputError) as excinfo:
        cifar.inspect_file(path)
    message = _one_line(excinfo)
    assert "data_batch_1.bin" in message and str(2 * 3073 + 5) in message


def test_inspect_file_rejects_an_empty_file(tmp_path):
    path = tmp_path / "test_batch.bin"
    path.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="test_batch.bin.*size 0 bytes"):
        cifar.inspect_file(path)


def test_inspect_file_names_the_record_with_a_label_above_nine(tmp_path):
    path = tmp_path / "data_batch_3.bin"
    images, labels = make_records(12, seed=0)
    cifar.write_cifar_file(path, images, labels)
    raw = bytearray(path.read_bytes())
    raw[7 * 3073] = 10
    raw[9 * 3073] = 200  # a later bad record: the first one is reported
    path.write_bytes(bytes(raw))
    with pytest.raises(InvalidInputError) as excinfo:
        cifar.inspect_file(path)
    message = _one_line(excinfo)
    assert "data_batch_3.bin" in message and "record 7" in message and "label byte 10" in message


def test_inspect_file_missing_path_or_directory(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file or directory: .*absent.bin"):
        cifar.inspect_file(tmp_path / "absent.bin")
    with pytest.raises(InvalidInputError, match="is not a file"):
        cifar.inspect_file(tmp_path)
    with pytest.raises(InvalidInputError, match="no such file or directory: .*absent.bin"):
        cifar.read_images([tmp_path / "absent.bin"])


# --- import_cifar -----------------------------------------------------------------------------------------

def test_import_from_directory_and_from_archive_give_identical_results(tmp_path):
    source_dir = make_cifar_dir(tmp_path / "src", train_records=(20, 10, 30, 20, 10), test_records=40, seed=4)
    archive = make_cifar_archive(tmp_path / "download", train_records=(20, 10, 30, 20, 10), test_records=40,
                                 seed=4)
    from_dir = cifar.import_cifar(source_dir, tmp_path / "dest_dir")
    from_archive = cifar.import_cifar(archive, tmp_path / "dest_archive")

    assert from_dir == from_archive
    assert [info["name"] for info in from_dir] == list(ALL_FILES)
    assert [info["records"] for info in from_dir] == [20, 10, 30, 20, 10, 40]
    for info in from_dir:
        assert info["sha256"] == _sha(os.path.join(str(source_dir), info["name"]))
    expected = _tree_hashes(source_dir)
    assert set(expected) == set(ALL_FILES + (cifar.META_FILE,))
    assert _tree_hashes(tmp_path / "dest_dir") == expected
    assert _tree_hashes(tmp_path / "dest_archive") == expected


@pytest.mark.parametrize("prefix", ["", "deep/down/cifar-10-batches-bin"])
def test_import_archive_finds_files_at_any_depth(tmp_path, prefix):
    archive = make_cifar_archive(tmp_path, prefix=prefix, meta=False, name="data.tar")
    infos = cifar.import_cifar(archive, tmp_path / "dest")
    assert [info["records"] for info in infos] == [20, 20, 20, 20, 20, 30]
    assert sorted(os.listdir(str(tmp_path / "dest"))) == sorted(ALL_FILES)


def test_import_directory_accepts_the_parent_of_cifar_10_batches_bin(tmp_path):
    make_cifar_dir(tmp_path / "extracted" / "cifar-10-batches-bin", seed=2)
    infos = cifar.import_cifar(tmp_path / "extracted", tmp_path / "dest")
    assert len(infos) == 6 and infos[0]["records"] == 20


def test_import_archive_never_writes_outside_dest_dir(tmp_path):
    make_cifar_dir(tmp_path / "files")
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    absolute = tmp_path / "absolute-evil.txt"
    members = [("../../escaped/" + name, (tmp_path / "files" / name).read_bytes()) for name in ALL_FILES]
    members += [("../../escaped/evil.sh", b"echo pwned\n"), (str(absolute), b"x")]
    archive = write_archive(str(nested / "hostile.tar.gz"), members)
    cifar.import_cifar(archive, nested / "dest")
    assert sorted(os.listdir(str(nested / "dest"))) == sorted(ALL_FILES)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "a" / "escaped").exists()
    assert not absolute.exists()


def test_import_overwrites_a_previous_import_when_the_new_data_is_valid(tmp_path):
    cifar.import_cifar(make_cifar_dir(tmp_path / "old", seed=1), tmp_path / "dest")
    new = make_cifar_dir(tmp_path / "new", seed=2)
    cifar.import_cifar(new, tmp_path / "dest")
    assert _tree_hashes(tmp_path / "dest") == _tree_hashes(new)


@pytest.mark.parametrize("use_archive", [False, True])
def test_failed_import_leaves_existing_files_untouched(tmp_path, use_archive):
    dest = tmp_path / "dest"
    cifar.import_cifar(make_cifar_dir(tmp_path / "old", seed=1), dest)
    before = _tree_hashes(dest)

    bad = make_cifar_dir(tmp_path / "bad", seed=2)
    raw = bytearray((tmp_path / "bad" / "data_batch_2.bin").read_bytes())
    raw[3 * 3073] = 10
    (tmp_path / "bad" / "data_batch_2.bin").write_bytes(bytes(raw))
    source = bad
    if use_archive:
        source = write_archive(str(tmp_path / "bad.tar.gz"), [
            ("cifar-10-batches-bin/" + name, (tmp_path / "bad" / name).read_bytes())
            for name in ALL_FILES + (cifar.META_FILE,)])

    with pytest.raises(InvalidInputError, match="data_batch_2.bin is not a CIFAR-10 binary file: record 3 "):
        cifar.import_cifar(source, dest)
    assert _tree_hashes(dest) == before  # data_batch_1 (valid, staged first) was not replaced; no leftovers


def test_import_missing_source(tmp_path):
    with pytest.raises(InvalidInputError, match="no such file or directory: .*nothing-here"):
        cifar.import_cifar(tmp_path / "nothing-here", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_import_directory_missing_test_batch(tmp_path):
    source = make_cifar_dir(tmp_path / "src")
    os.remove(os.path.join(source, cifar.TEST_FILE))
    with pytest.raises(InvalidInputError) as excinfo:
        cifar.import_cifar(source, tmp_path / "dest")
    message = _one_line(excinfo)
    assert "is missing test_batch.bin (" in message
    assert "missing data_batch" not in message
    assert not (tmp_path / "dest").exists()


def test_import_archive_missing_one_file(tmp_path):
    make_cifar_dir(tmp_path / "files")
    archive = write_archive(str(tmp_path / "partial.tgz"), [
        ("cifar-10-batches-bin/" + name, (tmp_path / "files" / name).read_bytes())
        for name in ALL_FILES if name != "data_batch_4.bin"])
    with pytest.raises(InvalidInputError, match="partial.tgz is missing data_batch_4.bin \\("):
        cifar.import_cifar(archive, tmp_path / "dest")


def test_import_archive_without_cifar_files(tmp_path):
    archive = write_archive(str(tmp_path / "photos.tar.gz"), [("holiday/beach.jpg", b"\xff\xd8"),
                                                             ("README", b"hello")])
    with pytest.raises(InvalidInputError, match="photos.tar.gz holds no CIFAR-10 binary files"):
        cifar.import_cifar(archive, tmp_path / "dest")


def test_import_python_version_archive_gets_a_hint(tmp_path):
    archive = write_archive(str(tmp_path / "cifar-10-python.tar.gz"), [
        ("cifar-10-batches-py/data_batch_1", b"pickle"), ("cifar-10-batches-py/test_batch", b"pickle")])
    with pytest.raises(InvalidInputError, match="Python version; download cifar-10-binary.tar.gz"):
        cifar.import_cifar(archive, tmp_path / "dest")


def test_import_archive_with_two_copies_of_a_file_is_ambiguous(tmp_path):
    make_cifar_dir(tmp_path / "files")
    members = [("cifar-10-batches-bin/" + n, (tmp_path / "files" / n).read_bytes()) for n in ALL_FILES]
    members.append(("old/test_batch.bin", (tmp_path / "files" / "test_batch.bin").read_bytes()))
    archive = write_archive(str(tmp_path / "twice.tar"), members)
    with pytest.raises(InvalidInputError, match="2 copies of test_batch.bin"):
        cifar.import_cifar(archive, tmp_path / "dest")


def test_import_corrupt_archive(tmp_path):
    archive = tmp_path / "cifar-10-binary.tar.gz"
    archive.write_bytes(b"this is not a gzip stream at all" * 10)
    with pytest.raises(InvalidInputError, match="cannot read archive"):
        cifar.import_cifar(archive, tmp_path / "dest")


def test_import_truncated_archive(tmp_path):
    archive = make_cifar_archive(tmp_path / "download", train_records=(300, 20, 20, 20, 20))
    data = open(archive, "rb").read()
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(data[:len(data) // 2])
    with pytest.raises(InvalidInputError, match="cannot read"):
        cifar.import_cifar(truncated, tmp_path / "dest")
    assert not (tmp_path / "dest").exists() or os.listdir(str(tmp_path / "dest")) == []


def test_import_rejects_a_plain_file_that_is_not_an_archive(tmp_path):
    make_cifar_dir(tmp_path / "files")
    with pytest.raises(InvalidInputError, match="neither a directory nor a .tar.gz"):
        cifar.import_cifar(tmp_path / "files" / "data_batch_1.bin", tmp_path / "dest")


def test_import_rejects_a_destination_that_is_a_file(tmp_path):
    source = make_cifar_dir(tmp_path / "src")
    (tmp_path / "dest").write_text("x")
    with pytest.raises(UsageError, match="not a directory"):
        cifar.import_cifar(source, tmp_path / "dest")


# --- make_split -------------------------------------------------------------------------------------------

def _labels_with_counts(counts, seed=0):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return np.random.RandomState(seed).permutation(labels)


def test_split_first_takes_the_leading_records():
    labels = _labels_with_counts([10] * 10)
    indices = cifar.make_split(labels, 37)
    assert indices.dtype == np.int64
    np.testing.assert_array_equal(indices, np.arange(37))


def test_split_balanced_takes_the_same_number_per_class():
    labels = _labels_with_counts([12, 30, 8, 9, 15, 20, 11, 10, 8, 40])
    indices = cifar.make_split(labels, 80, method="balanced", seed=3)
    assert indices.dtype == np.int64
    assert np.all(np.diff(indices) > 0)  # sorted, no repeats
    assert np.bincount(labels[indices], minlength=10).tolist() == [8] * 10

    again = cifar.make_split(labels, 80, method="balanced", seed=3)
    np.testing.assert_array_equal(indices, again)
    other = cifar.make_split(labels, 80, method="balanced", seed=4)
    assert not np.array_equal(indices, other)
    # Classes with exactly 8 records must be taken whole, whatever the seed.
    for cls in (2, 8):
        np.testing.assert_array_equal(np.intersect1d(indices, np.flatnonzero(labels == cls)),
                                      np.flatnonzero(labels == cls))
        np.testing.assert_array_equal(np.intersect1d(other, np.flatnonzero(labels == cls)),
                                      np.flatnonzero(labels == cls))


def test_split_balanced_matches_a_per_class_draw():
    labels = _labels_with_counts([6] * 10, seed=9)
    rng = np.random.RandomState(11)
    expected = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), 2, replace=False)
                                       for c in range(10)]))
    np.testing.assert_array_equal(cifar.make_split(labels, 20, method="balanced", seed=11), expected)


@pytest.mark.parametrize("num_labelled, method, pattern", [
    (0, "first", "num_labelled is 0 .* 100 training records"),
    (101, "first", "num_labelled is 101 .* 100 training records"),
    (101, "balanced", "num_labelled is 101 .* 100 training records"),
    (55, "balanced", "divisible by 10 classes, got 55"),
    (50, "stratified", "unknown split method 'stratified'"),
    (12.5, "first", "whole number"),
])
def test_split_errors(num_labelled, method, pattern):
    labels = _labels_with_counts([10] * 10)
    with pytest.raises(UsageError, match=pattern):
        cifar.make_split(labels, num_labelled, method=method)


def test_split_balanced_names_the_class_that_is_too_small():
    labels = _labels_with_counts([10, 10, 10, 10, 10, 10, 3, 10, 10, 10])
    with pytest.raises(UsageError, match="class 6 has only 3 training records .* 50 needs 5 per class"):
        cifar.make_split(labels, 50, method="balanced")
