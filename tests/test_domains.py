"""The multi-domain demo set (work in progress for issue 14): deterministic, balanced, four distinct styles,
written as PNG files in PACS's DOMAIN/CLASS layout that TensorFlow's decoder reads back exactly."""

import numpy as np
from mpltool.data import demo
from mpltool.data.domains import STYLES, make_domain_images, write_domain_demo


def test_each_style_is_deterministic_balanced_and_looks_different():
    means = {}
    for style in STYLES:
        images, labels = make_domain_images(40, 3, style)
        again, _ = make_domain_images(40, 3, style)
        assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
        np.testing.assert_array_equal(images, again)
        assert np.bincount(labels, minlength=10).tolist() == [4] * 10
        means[style] = float(images.mean())
    assert means["sketch"] > 180 > means["photo"]  # light paper vs dark backgrounds
    sketch, _ = make_domain_images(40, 3, "sketch")
    assert np.all(sketch[..., 0] == sketch[..., 2])  # no colour


def test_written_pngs_decode_to_the_generated_pixels(tmp_path):
    from mpltool.tfv1 import tf

    counts = write_domain_demo(tmp_path, per_domain=10)
    assert counts == {style: 10 for style in STYLES}
    images, labels = make_domain_images(10, [0, 100 + STYLES.index("cartoon")], "cartoon")
    path = tmp_path / "cartoon" / demo.DEMO_CLASSES[labels[0]].replace(" ", "_") / "00000.png"
    with tf.Session() as session:
        decoded = session.run(tf.image.decode_png(tf.read_file(str(path)), channels=3))
    np.testing.assert_array_equal(decoded, images[0])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(STYLES)


def test_image_folders_import_every_domain_and_read_back_the_pixels(tmp_path):
    from mpltool.data.folders import import_image_files, read_image_index, scan
    from mpltool.data.records import FileImages

    write_domain_demo(tmp_path / "src", per_domain=10)
    layout = scan(tmp_path / "src")
    assert layout.domains == sorted(STYLES) and len(layout.classes) == 10 and len(layout.items) == 40
    summary = import_image_files(tmp_path / "src", tmp_path / "out")
    assert [d["records"] for d in summary["domains"]] == [10, 10, 10, 10]
    index = read_image_index(tmp_path / "out" / "images.tsv", tmp_path / "out" / "images")
    cartoon = np.flatnonzero(index.domains == sorted(STYLES).index("cartoon"))
    images = FileImages(index.root, index.relpaths[cartoon], index.fingerprints[cartoon], (32, 32))[:]
    expected, expected_labels = make_domain_images(10, [0, 100 + STYLES.index("cartoon")], "cartoon")
    assert sorted(index.labels[cartoon].tolist()) == sorted(expected_labels.tolist())
    assert {bytes(i) for i in images} == {bytes(i) for i in expected}  # 32x32 in: resize is exact


def test_a_broken_image_or_a_missing_class_folder_is_named(tmp_path):
    import pytest
    import shutil
    from mpltool.data.folders import import_image_files, scan
    from mpltool.errors import InvalidInputError

    write_domain_demo(tmp_path / "src", per_domain=10)
    broken = tmp_path / "src" / "photo" / "disc" / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(InvalidInputError, match="broken.png does not decode"):
        import_image_files(tmp_path / "src", tmp_path / "out")
    broken.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="broken.png is empty"):
        import_image_files(tmp_path / "src", tmp_path / "out")
    broken.unlink()
    shutil.rmtree(str(tmp_path / "src" / "sketch" / "ring"))
    with pytest.raises(InvalidInputError, match="domain sketch has no class folder"):
        scan(tmp_path / "src")
