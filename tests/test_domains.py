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
